"""The types every backend and stage shares (re-exported by `selftrain.generation`)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from typing import Iterable, Iterator, Protocol

from selftrain.config import GENERATION_BACKENDS as BACKENDS
from selftrain.errors import InputError

FINISH_REASONS = ("stop", "length")


class BackendError(InputError):
    """A generation service failed or answered outside its protocol: the stage stops with one line.

    Records already written stay on disk; a rerun resumes after them."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k cut
    max_new_tokens: int = 128


@dataclass(frozen=True)
class Request:
    """One sample to generate. `prompt_text` is the exact rendered prompt (local
    models and servers that serve the student's weights take it); `messages` are
    the chat messages (chat APIs take them). `seed` seeds this request's own
    random stream, so its reply does not depend on what else is in the batch."""

    key: str
    prompt_text: str | None = None
    messages: tuple[dict, ...] | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    seed: int = 0


@dataclass(frozen=True)
class CallUsage:
    """The server's `usage` of one call that answered several samples at once (`n`): the API counts only
    the call's totals, so each sample of the call carries them whole, never a guessed share."""

    samples: int  # choices the call returned (the samples that share these counts)
    prompt_tokens: int
    completion_tokens: int  # all its choices together


@dataclass(frozen=True)
class Completion:
    key: str
    text: str
    # generated tokens, without the stop token; None when the backend cannot tell (the openai backend
    # for a call that returned n > 1 choices: the API counts only their total, in `call_usage`)
    num_tokens: int | None
    finish_reason: str  # "stop" (a stop token or string ended it) or "length" (max_new_tokens reached)
    token_ids: tuple[int, ...] | None = None  # local backends only (benchmark agreement, tests)
    call_usage: CallUsage | None = None  # openai backend: a call of n > 1 choices whose reply had `usage`


@dataclass(frozen=True)
class ScoreRequest:
    """The next-token log-probabilities of `options` after a prompt, without generating: what
    expected-score judging reads (G-Eval). `prompt_text` is the exact rendered prompt, the
    assistant's opening included (a judge prompt ending in "Score:"); each option is a text of
    one token of the model's tokenizer (" 0" .. " 5"). `shared_prefix` is text that every request of
    the stage begins with (the system prompt and the rubric): a local backend computes its KV cache
    once and reuses it for every request, the same way whatever else is asked in the same call."""

    key: str
    prompt_text: str
    options: tuple[str, ...]
    shared_prefix: str = ""


@dataclass(frozen=True)
class OptionLogprobs:
    key: str
    # one per option, in the request's order: the natural log of its next-token probability under the
    # full vocabulary; None where a server's top_logprobs did not list it (probability below the k-th)
    logprobs: tuple[float | None, ...]


@dataclass
class GenerationStats:
    requests: int = 0  # calls made (HTTP requests; samples for local backends)
    completions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def since(self, before: "GenerationStats") -> "GenerationStats":
        """What was spent after `before` (a copy of these stats taken earlier)."""
        return GenerationStats(*(getattr(self, f.name) - getattr(before, f.name) for f in fields(self)))

    def as_dict(self) -> dict:
        rate = self.completion_tokens / self.seconds if self.seconds else 0.0
        return {"requests": self.requests, "completions": self.completions, "prompt_tokens": self.prompt_tokens,
                "generated_tokens": self.completion_tokens, "seconds": round(self.seconds, 2),
                "tokens_per_s": round(rate, 1)}


class Backend(Protocol):
    name: str
    stats: GenerationStats
    chosen_by: str  # why this backend runs the stage (set by `get_backend`; see choose.py)

    def generate(self, requests: Iterable[Request]) -> Iterator[Completion]:
        """One Completion per request, in the order they finish."""

    def describe(self) -> dict:
        """What produced the replies (backend, model, server, dtype, ...), for markers and logs."""

    def score_options(self, requests: Iterable[ScoreRequest]) -> Iterator[OptionLogprobs]:
        """One OptionLogprobs per request (expected-score judging); a BackendError where the backend or
        its server cannot give next-token log-probabilities."""

    def __enter__(self) -> "Backend": ...

    def __exit__(self, *exc) -> None: ...


def described(backend: Backend) -> dict:
    """`describe()` plus why the backend was chosen and the CPU kind: what a marker records."""
    from selftrain.models import cpu_kind

    return {**backend.describe(), "chosen_by": getattr(backend, "chosen_by", ""), "cpu_kind": cpu_kind()}


def request_seed(seed: int, key: str) -> int:
    """A request's own seed from the stage's seed and the request key (63 bits)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF
