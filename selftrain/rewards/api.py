"""External scoring service (seed 000, "2. External API"), standard library only.

Records are sent in batches of `api_batch_size`:

    POST api_endpoint   {"items": [{"prompt": ..., "response": ...}, ...]}
    reply               {"scores": [0.85, 0.72, ...]}   same order, one per item

`prompt` is the record's own question: its `prompt` field, else the last user
message of `messages`, else the rendered `prompt_text`. A scoring service is
asked about the question as the dataset states it, not about this run's chat
template, system prompt and few-shot examples (`selftrain.rewards.question_of`).

Timeouts, connection errors, HTTP 408, 429 and 5xx are retried (by
`selftrain.http.with_retries`) up to `api_max_retries` times, waiting
`backoff_base` seconds doubled each time (at most `backoff_max`), or the
server's `Retry-After` (at most `retry_after_max`).
After the last retry, or at once for any other 4xx, a redirect, or a reply that
is not exactly one finite number per item, the stage stops with an InputError
naming the endpoint and the batch: a reward is never guessed. `api_timeout`
bounds each socket operation (connect, each read), not a whole request.

The key is `api_key`, or if empty the environment variable named by
`api_key_env`, sent as `Authorization: Bearer <key>`; with neither, requests go
without that header. The key is never logged, never put in a message (server
text is scrubbed of it) and never written: `Config.to_dict` redacts it.
Redirects are not followed, so the header never goes to another address.
"""
from __future__ import annotations

import json
import math
import ssl
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException

from selftrain.errors import InputError
from selftrain.http import (Transient, is_transient_status, key_from_env, parse_retry_after, preview, redact,
                            with_retries)
from selftrain.logging import log
from selftrain.rewards import question_of


def check_score(value) -> float:
    """A reward as a float; ValueError (with the reason) for anything but a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {preview(json.dumps(value))}")
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")
    return float(value)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the 3xx reaches the caller as an HTTPError


class ApiReward:
    name = "api"
    verifiable = False
    backoff_base = 0.5  # seconds before the first retry, doubled for each next one
    backoff_max = 8.0
    retry_after_max = 60.0  # a longer Retry-After is cut to this

    def __init__(self, config):
        rc = config.reward_config
        self.endpoint = _check_endpoint(rc.api_endpoint)
        for key, low in (("api_timeout", 0), ("api_batch_size", 0), ("api_max_retries", -1)):
            if getattr(rc, key) <= low:
                raise InputError(f"reward_config.{key}: {getattr(rc, key)} must be {'> 0' if low == 0 else '>= 0'}")
        self.timeout, self.batch_size, self.max_retries = rc.api_timeout, rc.api_batch_size, rc.api_max_retries
        self._key = rc.api_key or key_from_env(rc.api_key_env)
        self._key_source = "reward_config.api_key" if rc.api_key else f"${rc.api_key_env}"
        if not self._key:
            log(f"reward api: no API key (reward_config.api_key is empty and ${rc.api_key_env or '<api_key_env>'} "
                f"is unset): requests to {self.endpoint} carry no Authorization header")
        self._opener = urllib.request.build_opener(_NoRedirect)

    def score(self, records: list[dict]) -> list[dict]:
        results = []
        for begin in range(0, len(records), self.batch_size):
            batch = records[begin:begin + self.batch_size]
            items = [{"prompt": question_of(r), "response": _response(r)} for r in batch]
            where = (f"reward api {self.endpoint}: batch of items {batch[0].get('id', begin)}"
                     f"..{batch[-1].get('id', begin + len(batch) - 1)}")
            scores = self._post_with_retries(items, where)
            results += [{"reward_score": s, "is_correct": None, "answer_found": True} for s in scores]
        return results

    def _post_with_retries(self, items: list[dict], where: str) -> list[float]:
        body = json.dumps({"items": items}).encode()
        return with_retries(lambda: self._post(body, len(items), where), max_retries=self.max_retries, where=where,
                            hint="is the service up? see reward_config.api_timeout / api_max_retries",
                            backoff_base=self.backoff_base, backoff_max=self.backoff_max,
                            retry_after_max=self.retry_after_max)

    def _post(self, body: bytes, n_items: int, where: str) -> list[float]:
        """One request: the scores, an InputError (do not retry) or Transient (retry)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as reply:
                raw = self._scrub(reply.read())
        except urllib.error.HTTPError as exc:
            self._raise_http(exc.code, exc.headers, _error_body(exc, self._scrub), where)
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise Transient(f"no connection within api_timeout={self.timeout} s") from None
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise InputError(f"{where}: TLS certificate not trusted: {exc.reason}") from None
            raise Transient(f"cannot connect: {exc.reason}") from None
        except TimeoutError:
            raise Transient(f"no reply within api_timeout={self.timeout} s") from None
        except (OSError, HTTPException) as exc:
            raise Transient(f"connection failed: {type(exc).__name__}: {exc}") from None
        return self._parse(raw, n_items, where)

    def _raise_http(self, code: int, headers, detail: str, where: str):
        said = f"HTTP {code}" + (f": {detail}" if detail else "")
        if is_transient_status(code):
            raise Transient(said, parse_retry_after(headers.get("Retry-After")))
        if code in (401, 403):
            hint = (f"check the key in {self._key_source}" if self._key else
                    "no key was sent: set reward_config.api_key or the variable named by reward_config.api_key_env")
            raise InputError(f"{where}: {said} ({hint})") from None
        if 300 <= code < 400:
            target = self._scrub(headers.get("Location", "?").encode()).decode()
            raise InputError(f"{where}: {said}: redirects to {target} (set reward_config.api_endpoint "
                             f"to the final URL; redirects are not followed)") from None
        raise InputError(f"{where}: {said} (check reward_config.api_endpoint and the request format)") from None

    def _parse(self, raw: bytes, n_items: int, where: str) -> list[float]:
        def bad(what: str) -> InputError:
            return InputError(f"{where}: bad reply: {what}")

        try:
            data = json.loads(raw)
        except ValueError:
            raise bad(f"not JSON: {preview(raw.decode('utf-8', 'replace'))!r}") from None
        if not isinstance(data, dict) or "scores" not in data:
            raise bad(f'expected {{"scores": [...]}}, got {preview(json.dumps(data))}')
        scores = data["scores"]
        if not isinstance(scores, list):
            raise bad(f"scores: expected a list, got {preview(json.dumps(scores))}")
        if len(scores) != n_items:
            raise bad(f"scores: {len(scores)} scores for {n_items} items")
        checked = []
        for i, value in enumerate(scores):
            try:
                checked.append(check_score(value))
            except ValueError as exc:
                raise bad(f"scores[{i}]: {exc}") from None
        return checked

    def _scrub(self, data: bytes) -> bytes:
        """A server's reply with the key cut out (a server may echo what it was sent), before any use."""
        return redact(data, self._key)


def _check_endpoint(url: str) -> str:
    if not url:
        raise InputError("reward_config.api_endpoint: missing (the api reward needs the scoring service's URL, "
                         "e.g. https://your-server.com/score)")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"reward_config.api_endpoint: {url!r} is not an http(s) URL "
                         "(e.g. https://your-server.com/score)")
    return url


def _response(record: dict) -> str:
    if not isinstance(record.get("response"), str):
        raise InputError(f"record {record.get('id')}: response: missing (scoring needs the generated text)")
    return record["response"]


def _error_body(exc: urllib.error.HTTPError, scrub) -> str:
    """The start of an error reply's body, scrubbed ("" if it cannot be read)."""
    try:
        with exc:
            return preview(scrub(exc.read(4096)).decode("utf-8", "replace"))
    except Exception:  # noqa: BLE001 - the status code alone still says what failed
        return ""

