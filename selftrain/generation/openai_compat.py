"""The `openai` backend: any OpenAI-compatible server (vLLM, llama.cpp, a hosted API)
through the official `openai` client.

`generation.api: completions` sends the rendered `prompt_text` (the server serves the
student's weights, so the prompt is exactly what training sees); `chat` sends the
chat `messages`. Every request states its sampling explicitly, because servers'
defaults differ from OpenAI's and from each other (llama.cpp: max_tokens 16,
top_k 40, ...): `temperature` (0 = greedy), `top_p`, `max_tokens`
(= max_new_tokens; not `max_completion_tokens`, which llama.cpp ignores) and `seed`
(the request's seed cut to 31 bits). OpenAI has no top-k: `top_k > 0` goes in the
body as the non-standard `top_k` field (vLLM and llama.cpp honour it, OpenAI
rejects or ignores it); `top_k = 0` sends nothing. `generation.extra_body` adds
fields to every request (a server's own knobs); a launched llama.cpp server gets
`min_p: 0, repeat_penalty: 1.0, top_k: 0` too, since its own defaults (0.05, 1.1,
40) would otherwise change the sampling asked for.

N samples of one prompt (same prompt or messages and sampling, consecutive or
not) are one call with `n=N` (`generation.use_n: auto`), the call seeded with the
first sample's seed. If exactly N choices with indices 0..N-1 come back, choice i
answers sample i. If one comes back (llama.cpp drops `n` silently), it answers the
first sample and every other sample is sent on its own with its own seed; the
server is remembered as ignoring `n` (`describe()["server_ignores_n"]`) and later
prompts go one request per sample at once. Any other count is an error.
`use_n: never` always sends one request per sample.

Retries are the openai client's own (`generation.max_retries` on timeouts,
connection errors, 408/409/429/5xx, exponential backoff from 0.5 s to 8 s; a
server's Retry-After is honoured up to 120 s, a longer one is not retried), each
retry logged here; `generation.timeout` bounds each connect/read/write.

Replies are checked, never guessed: a reply that is not JSON, has no `choices`
list, a choice whose text is not a string (null chat content), a `finish_reason`
other than "stop" or "length" (e.g. "content_filter"), or a wrong number of
choices or bad indices stops the stage with a BackendError naming the request
key; so does any other 4xx, at once. `usage` may be missing (some servers omit
it: its tokens count 0 in `stats`, said once); when present it must hold integer
token counts. `Completion.num_tokens` is `usage.completion_tokens` for a call that
produced one choice, None for n > 1: the API counts only the call's total, so each
choice of such a call carries that total whole in `Completion.call_usage` (samples,
prompt and completion tokens), never split into guessed per-choice counts.

The key is read from the environment variable `generation.api_key_env`, never from
a config; it is cut out of every message (servers may echo it) and never logged or
described. Without it a placeholder is sent: local servers accept any key, a remote
one that needs a key answers 401, reported as such.

At most `generation.max_concurrency` calls are in flight (daemon threads with the
one thread-safe client); `generate` yields each completion when its call returns,
so the stage appends it to disk at once. When the consumer stops (an error, Ctrl-C,
GeneratorExit) nothing more is sent: calls still in flight are abandoned, make no
further retries and never block the process from exiting.

`score_options` (expected-score judging, G-Eval) reads the next-token log-probabilities
of a few one-token options (" 0" .. " 5", or "0" .. "5" after "Score: ", as the judge's
tokenizer writes them) after a rendered prompt that ends inside the judge's reply, where
its score goes. It needs `generation.api: completions`: a chat request carries messages
and the server opens a new assistant turn after them, so the prompt cannot end after
"Score:" (vLLM's non-standard `continue_final_message` can continue a last assistant
message; OpenAI's API and llama-cpp-python's server cannot, and the chat template would
be the server's, not the prompt the stage rendered), and a ScoreRequest holds only the
rendered prompt; with `chat` it stops at once with a BackendError. One /v1/completions
call per request, with the same retries, timeout, concurrency, key redaction and
accounting as `generate` (each answered request is a completion in `stats`; the one
token the server generates is not counted among the generated tokens), body:

    {"model": M, "prompt": prompt_text, "max_tokens": 1, "temperature": 0, "top_p": 1,
     "seed": 0, "logprobs": SCORE_TOP_LOGPROBS, "echo": false, ...extra_body}

(`shared_prefix` is not sent: the prompt begins with it, and servers reuse the cache of a
common prefix by themselves: vLLM's prefix caching, llama-cpp-python's previous prompt.)

The reply's first choice lists the most likely next tokens with their log-probabilities,
in either of two shapes: the legacy completions one (OpenAI, vLLM, llama-cpp-python:
`logprobs.top_logprobs[0]` = {token text: logprob}) or the chat one that llama.cpp's own
`llama-server` sends on /v1/completions too (`logprobs.content[0].top_logprobs` =
[{token, logprob}, ...]). An option's logprob is the one listed under exactly its text:
" 3" matches the token " 3" only, never "3" (on byte-level BPE vocabularies, SmolLM2's,
Llama 3's, Qwen's, they are two tokens with probabilities of their own, and adding one
to the other would be wrong); an option not listed is None (its probability is below
the k-th). A text listed twice (two tokens rendered alike) keeps the larger logprob.
If no option is listed but one of them without its leading space is, that is logged
once (a server that drops a SentencePiece word marker when rendering tokens). Values
are natural logs, <= 0 (a float error up to 1e-3 above 0 reads as 0).

A reply without logprobs (`logprobs` missing or null, no top list, or an empty one for a
token it did generate) is a BackendError naming the request key: judge_scoring:
expected needs a server that returns them. One exception: llama-cpp-python's server
lists nothing when the token it picks ends the reply (an end-of-turn token is not a
completion token there), so an empty reply that stopped scores every option None.
Malformed logprobs (wrong types, NaN, a positive logprob) are BackendErrors like any
other reply outside the protocol.
"""
from __future__ import annotations

import contextlib
import json
import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator
from urllib.parse import urlsplit

import openai
from tqdm import tqdm

from selftrain.generation.base import (
    FINISH_REASONS, BackendError, CallUsage, Completion, GenerationStats, OptionLogprobs, Request, ScoreRequest,
)
from selftrain.http import is_transient_status, key_from_env, parse_retry_after, preview, redact
from selftrain.logging import log

PLACEHOLDER_KEY = "sk-no-key"  # sent when no key is set: servers started without --api-key accept anything
SEED_MASK = 0x7FFF_FFFF  # seeds go out as 31-bit non-negative ints (llama.cpp and vLLM take int32 / uint32)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# score_options: how many of the most likely next tokens a server lists. Enough for the six score tokens
# and a few others ("\n", " **"); vLLM accepts up to its --max-logprobs (default 20), llama.cpp any number,
# OpenAI's completions API at most 5 (it cannot serve the judge's weights anyway).
SCORE_TOP_LOGPROBS = 20
LOGPROB_SLACK = 1e-3  # a listed logprob this far above 0 is a float error: read as 0

_thread = threading.local()  # per worker thread: the running call (key, cancel event) for the httpx hooks


class _Cancelled(openai.OpenAIError):
    """Raised before a (re)try of a call whose generate() was abandoned; the openai client does not retry it."""


@dataclass
class _Call:
    """One HTTP call: `requests` share prompt and sampling (n = len(requests)), or one ScoreRequest."""

    requests: list

    @property
    def n(self) -> int:
        return len(self.requests)

    @property
    def key(self) -> str:
        return self.requests[0].key


@dataclass
class _Reply:
    choices: list[tuple[str, str]]  # (text, finish_reason) in index order
    prompt_tokens: int | None
    completion_tokens: int | None  # None: the server sent no usage


class _Run:
    """State one generate() shares with its worker threads."""

    def __init__(self):
        self.cancel = threading.Event()
        self.results: queue.Queue = queue.Queue()


class OpenAIBackend:
    name = "openai"

    def __init__(self, gen, served_model: str, progress: bool = True, base_url: str | None = None,
                 use_key: bool = True, extra_body: dict | None = None):
        """`use_key=False` (a server the stage launched itself): the user's key is never sent.
        `extra_body`: fields sent with every request, over `generation.extra_body`."""
        self.gen, self.model, self.progress = gen, served_model, progress
        self.extra_body = {**gen.extra_body, **(extra_body or {})}
        self.base_url = (base_url or gen.base_url or "").rstrip("/")
        if not self.base_url:
            raise BackendError("generation.base_url: missing: the openai backend needs the server's URL "
                               "(e.g. http://127.0.0.1:8000/v1)")
        if gen.api not in ("completions", "chat"):
            raise BackendError(f"generation.api: {gen.api!r} is not one of completions, chat")
        self._key = key_from_env(gen.api_key_env) if use_key else ""
        host = urlsplit(self.base_url).hostname or ""
        if not self._key and use_key:
            log(f"openai backend: no API key (${gen.api_key_env or '<generation.api_key_env>'} is not set): "
                + ("a local server needs none" if host in LOOPBACK else
                   f"requests to {self.where} go without one; a server that needs one will answer 401"))
        self.server_ignores_n = False
        self._said_no_usage = self._said_spaces = False
        self.stats = GenerationStats()
        # A server on loopback is never reached through a proxy from the environment.
        self._http = openai.DefaultHttpxClient(trust_env=host not in LOOPBACK,
                                               event_hooks={"request": [self._before_send],
                                                            "response": [self._after_receive]})
        self.client = openai.OpenAI(base_url=self.base_url, api_key=self._key or PLACEHOLDER_KEY,
                                    max_retries=gen.max_retries, timeout=gen.timeout, http_client=self._http)

    @property
    def where(self) -> str:
        return f"openai backend {self._scrub(self.base_url)}"

    def __enter__(self) -> "OpenAIBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()
        self._http.close()

    def describe(self) -> dict:
        return {"backend": "openai", "base_url": self._scrub(self.base_url), "model": self.model,
                "api": self.gen.api, "server_ignores_n": self.server_ignores_n}

    # --- generation ---

    def generate(self, requests: Iterable[Request]) -> Iterator[Completion]:
        """One Completion per request, yielded as its call returns (see the module docstring)."""
        requests = list(requests)
        self._check(requests)
        pending = deque(self._plan(requests))
        with self._session(len(requests), "generate") as bar, \
                contextlib.closing(self._dispatch(pending, self._send, self._take)) as replies:
            for call, reply in replies:
                completions, retry = self._assign(call, reply)
                pending.extendleft(reversed(retry))  # sent before the calls still waiting
                for completion in completions:
                    self.stats.completions += 1
                    bar.update(1)
                    yield completion

    def score_options(self, requests: Iterable[ScoreRequest]) -> Iterator[OptionLogprobs]:
        """One OptionLogprobs per request, yielded as its call returns (see the module docstring)."""
        requests = list(requests)
        self._check_scoring(requests)
        pending = deque(_Call([r]) for r in requests)
        with self._session(len(requests), "score") as bar, \
                contextlib.closing(self._dispatch(pending, self._send_score)) as replies:
            for call, (scored, usage, bare) in replies:
                self._tally(usage, generated=False)
                if bare and not self._said_spaces:
                    log(f"{self._where(call)}: none of the options {list(call.requests[0].options)} is among the "
                        f"server's top {SCORE_TOP_LOGPROBS} next tokens, but {bare!r} is: options match token texts "
                        f"exactly, and this server may render tokens without their leading space")
                    self._said_spaces = True
                self.stats.completions += 1
                bar.update(1)
                yield scored

    @contextlib.contextmanager
    def _session(self, total: int, desc: str):
        """A progress bar over `total` requests; the time spent counts in `stats.seconds`."""
        bar = tqdm(total=total, desc=desc, unit="seq", disable=not self.progress, dynamic_ncols=True)
        started = time.perf_counter()
        try:
            yield bar
        finally:
            bar.close()
            self.stats.seconds += time.perf_counter() - started

    def _dispatch(self, pending: deque, send: Callable, take: Callable = deque.popleft) -> Iterator[tuple]:
        """(call, reply) for the calls in `pending` as each returns: `send(call)` runs in a worker thread, at
        most generation.max_concurrency at once; `take(pending)` picks the next call. The consumer may add
        calls to `pending` between replies. A call's exception is raised here; once the consumer stops
        (closes this generator), calls still in flight are abandoned and no further attempt is sent."""
        run, in_flight = _Run(), 0
        try:
            while pending or in_flight:
                while pending and in_flight < self.gen.max_concurrency:
                    call = take(pending)
                    self.stats.requests += 1
                    threading.Thread(target=self._work, args=(call, run, send), daemon=True,
                                     name=f"openai-{call.key}").start()
                    in_flight += 1
                call, outcome = run.results.get()
                in_flight -= 1
                if isinstance(outcome, BaseException):
                    raise outcome
                yield call, outcome
        finally:
            run.cancel.set()

    def _take(self, pending: deque) -> _Call:
        call = pending.popleft()
        if self.server_ignores_n and call.n > 1:  # learnt while this call waited
            pending.extendleft(_Call([r]) for r in reversed(call.requests[1:]))
            call = _Call(call.requests[:1])
        return call

    def _check_keys(self, requests: list) -> None:
        seen = set()
        for r in requests:
            if r.key in seen:
                raise BackendError(f"{self.where}: request {r.key}: key appears twice in one batch")
            seen.add(r.key)

    def _check(self, requests: list[Request]) -> None:
        self._check_keys(requests)
        for r in requests:
            if self.gen.api == "completions" and not isinstance(r.prompt_text, str):
                raise BackendError(f"{self.where}: request {r.key}: no prompt_text "
                                   "(generation.api: completions sends the rendered prompt)")
            if self.gen.api == "chat" and (not r.messages or not all(isinstance(m, dict) for m in r.messages)):
                raise BackendError(f"{self.where}: request {r.key}: no chat messages "
                                   "(generation.api: chat sends the messages; completions sends prompt_text)")

    def _plan(self, requests: list[Request]) -> list[_Call]:
        if self.gen.use_n != "auto" or self.server_ignores_n:
            return [_Call([r]) for r in requests]
        groups: dict = {}  # same prompt and sampling, in first-seen order
        for r in requests:
            what = r.prompt_text if self.gen.api == "completions" else json.dumps(r.messages, sort_keys=True)
            groups.setdefault((what, r.params), []).append(r)
        return [_Call(group) for group in groups.values()]

    def _check_scoring(self, requests: list[ScoreRequest]) -> None:
        if self.gen.api != "completions":
            raise BackendError(
                f"{self.where}: expected-score judging (self_rewarding.judge_scoring: expected) needs "
                f"generation.api: completions, not {self.gen.api}: the prompt must end inside the judge's reply, "
                f"after \"Score:\", and a chat request makes the server open a new reply; use a server that serves "
                f"the judge's weights with generation.api: completions, or judge_scoring: sampled")
        self._check_keys(requests)
        for r in requests:
            if not isinstance(r.prompt_text, str):
                raise BackendError(f"{self.where}: request {r.key}: no prompt_text (score_options sends the rendered "
                                   f"prompt)")
            if not r.options or not all(isinstance(o, str) and o for o in r.options):
                raise BackendError(f"{self.where}: request {r.key}: options must be non-empty texts, got "
                                   f"{r.options!r}")

    def _tally(self, usage: tuple[int, int] | None, generated: bool = True) -> None:
        """Count a reply's `usage` (prompt_tokens, completion_tokens) in `stats`; None: the server sent none."""
        if usage is None:
            if not self._said_no_usage:
                log(f"{self.where}: the server sends no `usage`: token counts in the stage's stats stay 0")
                self._said_no_usage = True
            return
        self.stats.prompt_tokens += usage[0]
        if generated:
            self.stats.completion_tokens += usage[1]

    def _assign(self, call: _Call, reply: _Reply) -> tuple[list[Completion], list[_Call]]:
        """The completions a reply answers, and the calls still to make for the rest of the group."""
        usage = None if reply.completion_tokens is None else (reply.prompt_tokens or 0, reply.completion_tokens)
        self._tally(usage)
        single = len(reply.choices) == 1
        num_tokens = reply.completion_tokens if single else None
        shared = CallUsage(len(reply.choices), *usage) if usage is not None and not single else None
        done = [Completion(r.key, text, num_tokens, finish, call_usage=shared)
                for r, (text, finish) in zip(call.requests, reply.choices)]
        rest = call.requests[len(reply.choices):]
        if rest and not self.server_ignores_n:
            self.server_ignores_n = True
            log(f"{self.where}: the server ignores `n` (asked for {call.n} choices, got 1): "
                "sending one seeded request per sample from now on")
        return done, [_Call([r]) for r in rest]

    # --- one call, in a worker thread ---

    def _work(self, call: _Call, run: _Run, send: Callable) -> None:
        _thread.key, _thread.cancel, _thread.status = call.key, run.cancel, None
        try:
            outcome = send(call)
        except BaseException as exc:  # noqa: BLE001 - handed to the generating thread, which raises it
            outcome = exc
        if not run.cancel.is_set():
            run.results.put((call, outcome))

    def _send(self, call: _Call) -> _Reply:
        first = call.requests[0]
        params = first.params
        kwargs = {"model": self.model, "temperature": params.temperature, "top_p": params.top_p,
                  "max_tokens": params.max_new_tokens, "seed": first.seed & SEED_MASK}
        if call.n > 1:
            kwargs["n"] = call.n
        extra = dict(self.extra_body)
        if params.top_k > 0:
            extra["top_k"] = params.top_k
        if extra:
            kwargs["extra_body"] = extra
        where = self._where(call)
        if self.gen.api == "completions":
            content = self._post(self.client.completions.with_raw_response.create, where, prompt=first.prompt_text,
                                 **kwargs)
        else:
            content = self._post(self.client.chat.completions.with_raw_response.create, where,
                                 messages=list(first.messages), **kwargs)
        return self._parse(content, call, where)

    def _send_score(self, call: _Call) -> tuple[OptionLogprobs, tuple[int, int] | None, str | None]:
        request = call.requests[0]
        where = self._where(call)
        rejected = (f"it asked for the top {SCORE_TOP_LOGPROBS} logprobs of one token (SCORE_TOP_LOGPROBS): vLLM "
                    f"allows up to its --max-logprobs (default 20), OpenAI's completions API 5; check "
                    f"generation.model ({self.model!r}) too")
        content = self._post(self.client.completions.with_raw_response.create, where, rejected, model=self.model,
                             prompt=request.prompt_text, max_tokens=1, temperature=0.0, top_p=1.0, seed=0,
                             logprobs=SCORE_TOP_LOGPROBS, echo=False,
                             **({"extra_body": dict(self.extra_body)} if self.extra_body else {}))
        return self._parse_score(content, request, where)

    def _post(self, create: Callable, where: str, rejected: str | None = None, **kwargs) -> bytes:
        """The body of `create(**kwargs)` (an openai `with_raw_response` call), its failures as BackendErrors."""
        try:
            return create(**kwargs).content
        except openai.APIStatusError as exc:
            raise self._status_error(exc, where, rejected) from None
        except openai.APITimeoutError as exc:
            raise self._gave_up(exc, where, f"no reply within generation.timeout={self.gen.timeout} s") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__
            what = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
            raise self._gave_up(exc, where, f"cannot connect: {what}") from None
        except _Cancelled:
            raise
        except openai.OpenAIError as exc:
            raise BackendError(f"{where}: {type(exc).__name__}: {self._scrub(preview(str(exc), 200))}") from None

    def _reply(self, content: bytes, where: str) -> tuple[dict, Callable, Callable]:
        """The reply's JSON object (it has a `choices` list), and its `bad(what)` error and `shown(value)` text."""
        def bad(what: str) -> BackendError:
            return BackendError(f"{where}: bad reply: {what}")

        def shown(value) -> str:
            return preview(self._scrub(json.dumps(value)), 120)

        try:
            data = json.loads(content)
        except ValueError:
            raise bad(f"not JSON: {preview(self._scrub(content.decode('utf-8', 'replace')), 120)!r}") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise bad(f"expected an object with a `choices` list, got {shown(data)}")
        return data, bad, shown

    def _parse(self, content: bytes, call: _Call, where: str) -> _Reply:
        data, bad, shown = self._reply(content, where)
        choices, n = data["choices"], call.n
        if len(choices) != n and not (len(choices) == 1 and n > 1 and self.gen.use_n == "auto"):
            raise bad(f"{len(choices)} choices for n={n}")
        by_index = {}
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                raise bad(f"choices[{position}]: expected an object, got {shown(choice)}")
            index = choice.get("index", 0 if len(choices) == 1 else None)
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(choices):
                raise bad(f"choices[{position}].index: {shown(index)} is not in 0..{len(choices) - 1}")
            if index in by_index:
                raise bad(f"choices[{position}].index: {index} appears twice")
            by_index[index] = self._choice(choice, position, bad, shown)
        prompt_tokens, completion_tokens = _usage(data, bad, shown) or (None, None)
        return _Reply([by_index[i] for i in range(len(choices))], prompt_tokens, completion_tokens)

    def _parse_score(self, content: bytes, request: ScoreRequest, where: str
                     ) -> tuple[OptionLogprobs, tuple[int, int] | None, str | None]:
        """The options' logprobs, the reply's usage, and, when no option is listed, a listed token that is one
        of them without its leading space (else None)."""
        data, bad, shown = self._reply(content, where)
        choices = data["choices"]
        if len(choices) != 1 or not isinstance(choices[0], dict):
            raise bad(f"expected one choice, got {shown(choices)}")
        listed = _top_logprobs(choices[0], bad, shown, self._no_logprobs(where))
        logprobs = tuple(listed.get(option) for option in request.options)
        stripped = {o.strip() for o in request.options} - set(request.options)
        bare = next((t for t in listed if t in stripped), None) if all(lp is None for lp in logprobs) else None
        return OptionLogprobs(request.key, logprobs), _usage(data, bad, shown), bare

    @staticmethod
    def _no_logprobs(where: str) -> Callable[[str], BackendError]:
        def error(what: str) -> BackendError:
            return BackendError(f"{where}: the server returned no logprobs ({what}): self_rewarding.judge_scoring: "
                                f"expected needs a server that returns them (vLLM, llama.cpp and OpenAI do); use "
                                f"judge_scoring: sampled otherwise")
        return error

    def _choice(self, choice: dict, position: int, bad, shown) -> tuple[str, str]:
        if self.gen.api == "completions":
            field, text = "text", choice.get("text")
        else:
            message = choice.get("message")
            field, text = "message.content", message.get("content") if isinstance(message, dict) else None
        if not isinstance(text, str):
            raise bad(f"choices[{position}].{field}: expected a string, got {shown(text)}")
        finish = choice.get("finish_reason")
        if finish not in FINISH_REASONS:
            raise bad(f"choices[{position}].finish_reason: {shown(finish)} is not one of {', '.join(FINISH_REASONS)}")
        return text, finish

    def _status_error(self, exc: openai.APIStatusError, where: str, rejected: str | None = None) -> BackendError:
        """`rejected`: what to check when the server rejected the request (a 4xx other than 401, 403, 404)."""
        status = exc.status_code
        said = f"HTTP {status}" + (f": {detail}" if (detail := self._server_message(exc)) else "")
        attempts = _attempts(exc)
        if attempts > 1 or is_transient_status(status):
            wait = parse_retry_after(exc.response.headers.get("retry-after"))
            if attempts == 1 and self.gen.max_retries > 0 and wait:
                said += f" (it asked to wait {wait:g} s, longer than the openai client waits: not retried)"
            return self._gave_up(exc, where, said)
        if status in (401, 403):
            hint = (f"check the key in ${self.gen.api_key_env}" if self._key else
                    f"no key was sent: put it in the environment variable ${self.gen.api_key_env} "
                    "(generation.api_key_env names it)")
        elif status == 404:
            hint = (f"check generation.base_url (usually ends in /v1) and generation.model "
                    f"({self.model!r} must be a name the server serves)")
        else:
            hint = "the server rejected the request: " + (rejected or (
                f"check generation.model ({self.model!r}), generation.api ({self.gen.api}) and the sampling settings"))
        return BackendError(f"{where}: {said} ({hint})")

    def _gave_up(self, exc: openai.APIError, where: str, what: str) -> BackendError:
        attempts = _attempts(exc)
        return BackendError(f"{where}: failed after {attempts} attempt{'s' if attempts != 1 else ''}; last: "
                            f"{self._scrub(what)} (is the server up? see generation.max_retries "
                            f"(now {self.gen.max_retries}), generation.timeout (now {self.gen.timeout} s) "
                            f"and generation.base_url)")

    def _server_message(self, exc: openai.APIStatusError) -> str:
        body = exc.body
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            text = body["message"]
        elif isinstance(body, str):
            text = body
        elif body is not None:
            text = json.dumps(body)
        else:
            try:
                text = exc.response.text
            except Exception:  # noqa: BLE001 - the status alone still says what failed
                text = ""
        return preview(self._scrub(text), 200)

    def _where(self, call: _Call) -> str:
        extra = f" (one call for {call.n} samples)" if call.n > 1 else ""
        return f"{self.where}: request {call.requests[0].key}{extra}"

    def _scrub(self, text: str) -> str:
        return redact(text, self._key)

    # --- httpx hooks: run in the worker thread before each attempt and after each response ---

    def _before_send(self, request) -> None:
        cancel = getattr(_thread, "cancel", None)
        if cancel is not None and cancel.is_set():
            raise _Cancelled("generation was abandoned")
        retry = request.headers.get("x-stainless-retry-count", "0")
        if retry != "0":
            status = getattr(_thread, "status", None)
            last = f"HTTP {status}" if status is not None else "timed out or connection failed"
            log(f"{self.where}: request {getattr(_thread, 'key', '?')}: {last}; "
                f"retry {retry}/{self.gen.max_retries}")
        _thread.status = None

    def _after_receive(self, response) -> None:
        _thread.status = response.status_code


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _usage(data: dict, bad, shown) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) of a reply; None when it has no `usage`."""
    usage = data.get("usage")
    if usage is None:
        return None
    if not (isinstance(usage, dict) and _count(usage.get("prompt_tokens", 0))
            and _count(usage.get("completion_tokens"))):
        raise bad(f"usage: expected integer prompt_tokens and completion_tokens, got {shown(usage)}")
    return usage.get("prompt_tokens", 0), usage["completion_tokens"]


def _top_logprobs(choice: dict, bad, shown, none) -> dict[str, float]:
    """{token text: logprob} of the first generated position of a completions choice, in the legacy shape
    (`logprobs.top_logprobs[0]`, a dict) or llama-server's (`logprobs.content[0].top_logprobs`, a list of
    {token, logprob}). `none(what)` is the error for a reply without logprobs; {} for an empty reply that
    stopped (llama-cpp-python lists nothing when the first token it picks ends the reply)."""
    logprobs = choice.get("logprobs")
    if logprobs is None:
        raise none("`choices[0].logprobs` is missing or null")
    if not isinstance(logprobs, dict):
        raise bad(f"choices[0].logprobs: expected an object, got {shown(logprobs)}")
    if "top_logprobs" in logprobs:
        field, positions = "choices[0].logprobs.top_logprobs", logprobs["top_logprobs"]
    elif "content" in logprobs:
        field, positions = "choices[0].logprobs.content", logprobs["content"]
    else:
        raise none("`choices[0].logprobs` has neither `top_logprobs` nor `content`")
    if positions is not None and not isinstance(positions, list):
        raise bad(f"{field}: expected a list, got {shown(positions)}")
    if not positions:
        if positions == [] and choice.get("text") == "" and choice.get("finish_reason") == "stop":
            return {}
        raise none(f"`{field}` is empty or null")
    first = positions[0]
    if field.endswith("content"):  # [{token, logprob, top_logprobs: [{token, logprob}, ...]}, ...]
        if not isinstance(first, dict):
            raise bad(f"{field}[0]: expected an object, got {shown(first)}")
        field, entries = f"{field}[0].top_logprobs", first.get("top_logprobs")
        if entries is not None and not isinstance(entries, list):
            raise bad(f"{field}: expected a list, got {shown(entries)}")
        if not all(isinstance(e, dict) for e in entries or []):
            raise bad(f"{field}: expected objects with `token` and `logprob`, got {shown(entries)}")
        pairs = [(e.get("token"), e.get("logprob")) for e in entries or []]
    else:  # [{token: logprob, ...}, ...]
        field = f"{field}[0]"
        if first is not None and not isinstance(first, dict):
            raise bad(f"{field}: expected an object of token: logprob, got {shown(first)}")
        pairs = list((first or {}).items())
    if not pairs:
        raise none(f"`{field}` is empty or null")
    listed: dict[str, float] = {}
    for token, value in pairs:
        if not isinstance(token, str) or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or math.isnan(value) or value > LOGPROB_SLACK:
            raise bad(f"{field}: expected token texts with logprobs <= 0, got {shown({str(token): value})}")
        listed[token] = max(listed.get(token, -math.inf), min(float(value), 0.0))
    return listed


def _attempts(exc: openai.APIError) -> int:
    """How many attempts the openai client made: its last request carries the retry count."""
    try:
        return int(exc.request.headers.get("x-stainless-retry-count", "0")) + 1
    except (AttributeError, ValueError):
        return 1
