"""Next-token log-probabilities of a few options after many prompts that share a prefix: what
expected-score judging reads, one forward pass per request and no generation.

The shared prefix (the system prompt and the rubric every judge prompt opens with) is run once and
its KV cache kept; each request then runs only its own tokens, alone (batch 1), on that cache. A
request's log-probabilities depend on its own tokens and the prefix's, never on which other requests
share the call or in which order they come: a stage resumed after a kill scores exactly as an
unbroken one (batching rows of different lengths changes a row's floating-point sums, which is why
the engine's batch-wide prefill sharing was reverted). At ~100-250 tokens a request is a matrix
product of reasonable height on a CPU, so batch 1 costs little.

The prefix used is the longest token prefix that the request's own tokens share with the tokens of
`ScoreRequest.shared_prefix` (a text is not always tokenized the same at its end as inside a longer
text), one token short of the whole prompt; its cache is kept by those token ids, so the same
prefix is always computed from the same ids in the same way.
"""
from __future__ import annotations

import copy
import time
from collections import OrderedDict
from typing import Iterable, Iterator

import torch

from selftrain.errors import InputError
from selftrain.generation.base import OptionLogprobs, ScoreRequest
from selftrain.generation.engine import common_prefix_length

KEPT_PREFIXES = 4  # prefix caches kept (a stage has one rubric; a few boundary variants at most)


def option_token_ids(tokenizer, options: tuple[str, ...]) -> list[int]:
    """The one token id of each option text; an error naming the option when it is not one token."""
    ids = []
    for option in options:
        tokens = tokenizer(option, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            raise InputError(f"score option {option!r} is {len(tokens)} tokens of this tokenizer, not one: "
                             f"expected-score judging reads one next-token distribution")
        ids.append(tokens[0])
    return ids


class PrefixScorer:
    """Option log-probabilities for rendered prompts, with prefix caches kept between calls."""

    def __init__(self, model, encode):
        self.model, self.encode = model, encode  # encode: rendered text -> token ids (the training rule)
        self.device = next(model.parameters()).device
        self._prefixes: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self.stats = {"requests": 0, "prompt_tokens": 0, "prefix_tokens_reused": 0, "seconds": 0.0}
        self.share = _plain_cache(model)  # models with other cache kinds run each prompt whole

    def _prefix_cache(self, ids: tuple[int, ...]):
        if ids in self._prefixes:
            self._prefixes.move_to_end(ids)
            return self._prefixes[ids]
        out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True, logits_to_keep=1)
        self.stats["prompt_tokens"] += len(ids)
        self._prefixes[ids] = out.past_key_values
        if len(self._prefixes) > KEPT_PREFIXES:
            self._prefixes.popitem(last=False)
        return out.past_key_values

    def logprobs(self, ids: list[int], prefix_ids: list[int], option_ids: list[int]) -> list[float]:
        n = reused_length(ids, prefix_ids) if self.share else 0
        cache = _copy_cache(self._prefix_cache(tuple(ids[:n]))) if n > 0 else None
        own = torch.tensor([ids[n:]], device=self.device)
        out = self.model(input_ids=own, past_key_values=cache, use_cache=cache is not None,
                         position_ids=torch.arange(n, len(ids), device=self.device)[None],
                         attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=self.device),
                         logits_to_keep=1)
        self.stats["prompt_tokens"] += len(ids) - n
        self.stats["prefix_tokens_reused"] += n
        logp = out.logits[0, -1].float().log_softmax(-1)
        return [float(logp[i]) for i in option_ids]

    def score(self, requests: Iterable[ScoreRequest], tokenizer) -> Iterator[OptionLogprobs]:
        with torch.inference_mode():
            for r, ids, shared, option_ids in prepared(requests, tokenizer, self.encode):
                started = time.perf_counter()
                values = self.logprobs(ids, shared, option_ids)
                self.stats["requests"] += 1
                self.stats["seconds"] += time.perf_counter() - started
                yield OptionLogprobs(r.key, tuple(values))


def prepared(requests: Iterable[ScoreRequest], tokenizer, encode) -> Iterator[tuple]:
    """(request, its token ids, its shared prefix's token ids, its options' token ids) per request, by the
    rule every scoring backend follows; an empty prompt or a multi-token option is an error naming it."""
    option_ids: dict[tuple[str, ...], list[int]] = {}
    prefix_ids: dict[str, list[int]] = {}
    for r in requests:
        if r.options not in option_ids:
            option_ids[r.options] = option_token_ids(tokenizer, r.options)
        if r.shared_prefix not in prefix_ids:
            prefix_ids[r.shared_prefix] = encode(r.shared_prefix) if r.shared_prefix else []
        ids = encode(r.prompt_text)
        if not ids:
            raise InputError(f"request {r.key}: empty prompt (nothing to condition on)")
        yield r, ids, prefix_ids[r.shared_prefix], option_ids[r.options]


def reused_length(ids: list[int], shared: list[int]) -> int:
    """How many of a request's tokens come from the kept prefix cache: the longest token prefix they share
    with the shared prefix's, one short of the whole prompt (the last token's logits are the answer)."""
    return min(common_prefix_length([ids, shared]), len(ids) - 1) if shared else 0


def _plain_cache(model) -> bool:
    from selftrain.generation.engine import _check_cache_support

    try:
        _check_cache_support(model)
    except InputError:
        return False
    return True


def _copy_cache(cache):
    """A cache to extend: the layers are new objects pointing at the prefix's tensors, which an update
    replaces (a DynamicLayer concatenates) and never writes into."""
    copied = copy.copy(cache)
    copied.layers = [copy.copy(layer) for layer in cache.layers]
    return copied
