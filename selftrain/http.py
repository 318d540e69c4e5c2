"""HTTP plumbing shared by the `api` reward (urllib) and the `openai` generation backend.

- the key: read from the environment variable a config names (`key_from_env`), never
  from a file, and cut out of any text or bytes before it is shown (`redact`);
- which HTTP statuses are worth retrying (`is_transient_status`: 408, 429, 5xx) and
  how long to wait (`backoff_delay`: exponential, or the server's `Retry-After`,
  parsed by `parse_retry_after`);
- `with_retries`: the retry loop for callers without one of their own (urllib has
  none). The openai client retries by itself (`max_retries`, `timeout`, with its
  own backoff honouring Retry-After); its callers must not add a loop around it.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable, TypeVar

from selftrain.errors import InputError
from selftrain.logging import log

REDACTED = "<redacted>"
T = TypeVar("T")


def key_from_env(variable: str) -> str:
    """The secret held by environment variable `variable` ("" when unnamed, unset or empty)."""
    return os.environ.get(variable, "") if variable else ""


def redact(data: str | bytes, secret: str) -> str | bytes:
    """`data` (text or bytes) with every occurrence of `secret` replaced by <redacted>.

    Scrub before cutting text short, so a cut cannot leave half a key behind."""
    if not secret:
        return data
    if isinstance(data, bytes):
        return data.replace(secret.encode(), REDACTED.encode())
    return data.replace(secret, REDACTED)


def preview(text: str, limit: int = 80) -> str:
    """`text` on one line, cut to `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def is_transient_status(code: int) -> bool:
    """HTTP statuses worth retrying: request timeout, rate limit, server errors."""
    return code in (408, 429) or code >= 500


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; None when absent, not a number or an HTTP date (the backoff applies then)."""
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def backoff_delay(attempt: int, base: float, maximum: float, retry_after: float | None = None,
                  retry_after_max: float = 60.0) -> float:
    """Seconds to wait after failed attempt `attempt` (from 0): the server's Retry-After
    (at most `retry_after_max`) if it gave one, else `base` doubled per attempt, at most `maximum`."""
    if retry_after is not None:
        return min(retry_after, retry_after_max)
    return min(base * 2 ** attempt, maximum)


class Transient(Exception):
    """A failure worth retrying; `retry_after` is the server's wish in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def with_retries(call: Callable[[], T], *, max_retries: int, where: str, hint: str, backoff_base: float,
                 backoff_max: float, retry_after_max: float, error: type[Exception] = InputError) -> T:
    """`call()`, retried up to `max_retries` times while it raises `Transient`, waiting
    `backoff_delay` between attempts (each retry logged). After the last attempt:
    `error("<where>: failed after N attempts; last: <failure> (<hint>)")`.
    Anything else `call` raises goes through at once."""
    failure: Transient | None = None
    for attempt in range(max_retries + 1):
        try:
            return call()
        except Transient as exc:
            failure = exc
        if attempt == max_retries:
            break
        delay = backoff_delay(attempt, backoff_base, backoff_max, failure.retry_after, retry_after_max)
        log(f"{where}: {failure} (attempt {attempt + 1}/{max_retries + 1}); retrying in {delay:.3g} s")
        time.sleep(delay)
    raise error(f"{where}: failed after {max_retries + 1} attempts; last: {failure} ({hint})")
