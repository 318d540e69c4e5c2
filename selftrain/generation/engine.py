"""Batched generation that does not waste compute on padding.

Plain `model.generate` runs a batch until its longest sequence ends, so with
replies of very different lengths most of the work is padding (measured here:
a third of the slots carried real tokens). This engine keeps `batch_size` slots
busy instead:

- finished sequences leave the batch at once and waiting prompts take their
  slots (continuous batching over one KV cache, rows aligned by left padding);
- prompts are scheduled shortest first, so a prefill group pads little;
- the longest token prefix shared by all prompts (system prompt, few-shot
  examples) is computed once and reused by every row;
- every request samples from its own seeded random stream, so what a request
  gets does not depend on which other requests share its batch;
- decoding attends over whole preallocated KV buffers with grouped matmuls
  (`attention.py`), and sampling draws by a two-level inverse CDF.

`engine="hf"` runs plain `model.generate` instead, for architectures whose cache
this engine does not handle; it is also the baseline of `bench/bench_generation.py`.
This module works in token ids; `local.py` wraps it in the text-level Backend.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from tqdm import tqdm
from transformers.cache_utils import DynamicLayer

from selftrain.errors import InputError
from selftrain.generation.attention import use_decode_attention
from selftrain.generation.base import SamplingParams


@dataclass(frozen=True)
class TokenRequest:
    key: str
    prompt_ids: list[int]
    seed: int  # this request's own random stream (`selftrain.generation.request_seed`)


@dataclass(frozen=True)
class TokenCompletion:
    key: str
    token_ids: list[int]  # generated tokens, without the stop token
    finish_reason: str  # "stop" (stop token seen) or "length" (max_new_tokens reached)


def _cut(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """The logits with the tokens outside top-k / top-p set to -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def sample_next(logits: torch.Tensor, params: SamplingParams, generators: list[torch.Generator],
                scratch: torch.Tensor | None = None) -> torch.Tensor:
    """Next token per row: argmax when greedy, else inverse-CDF sampling with one
    uniform draw per row from that row's own generator (cheap, and independent of
    the other rows in the batch).

    The weights are exp(logits / T - row max), unnormalized (`inverse_cdf` scales
    by the row total), in float32 in `scratch` (a float32 buffer of at least the
    batch's rows) when given, in place unless top-k / top-p cut them: at batch
    256 the float copy of the logits is 50 MB, and allocating it anew every step
    (fresh pages from the kernel) plus an out-of-place division and softmax took
    16+ ms of a 270 ms step here."""
    if params.temperature == 0:
        return logits.argmax(-1)
    if scratch is not None and scratch.dtype == torch.float32 and scratch.shape[0] >= logits.shape[0] \
            and scratch.shape[1:] == logits.shape[1:]:
        weights = scratch[: logits.shape[0]].copy_(logits)
    else:
        weights = logits.to(torch.float32, copy=True)
    weights = _cut(weights.div_(params.temperature), params.top_k, params.top_p)
    weights.sub_(weights.amax(-1, keepdim=True)).exp_()
    uniform = 1.0 - torch.cat([torch.rand(1, generator=gen, dtype=torch.float64) for gen in generators])  # (0, 1]
    return inverse_cdf(weights, uniform)


class Sampler:
    """`sample_next` with its float32 buffer kept from one step to the next (grown when a batch has
    more rows): what every decoding loop calls on each step's logits."""

    def __init__(self, rows: int = 0):
        self.rows, self._scratch = rows, None

    def __call__(self, logits: torch.Tensor, params: SamplingParams, generators: list) -> torch.Tensor:
        logits = logits.cpu()
        if params.temperature > 0 and (self._scratch is None or self._scratch.shape[0] < logits.shape[0]):
            self._scratch = logits.new_empty(max(self.rows, logits.shape[0]), logits.shape[1], dtype=torch.float32)
        return sample_next(logits, params, generators, self._scratch)


def inverse_cdf(weights: torch.Tensor, uniform: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """Per row, the first index whose cumulative weight reaches `uniform` (in (0, 1]) times the
    row's total: a draw from the row's distribution. Two levels (block sums, then one block)
    instead of a cumulative sum over the whole vocabulary, which took 6 ms per batch-64 step
    (as much as the softmax, the division and the copies together). Zero-weight tokens
    are never returned."""
    rows, vocab = weights.shape
    pad = (-vocab) % block
    blocks = (torch.nn.functional.pad(weights, (0, pad)) if pad else weights).view(rows, -1, block)
    sums = blocks.sum(-1).double()  # summing in float64 would first copy every weight to float64
    cdf = sums.cumsum(-1)
    target = (uniform * cdf[:, -1]).unsqueeze(-1)
    which = torch.searchsorted(cdf, target).clamp(max=cdf.shape[-1] - 1)  # a block of positive weight
    target = target - (cdf.gather(-1, which) - sums.gather(-1, which))
    inside = blocks[torch.arange(rows), which.squeeze(-1)].double().cumsum(-1)
    target = torch.minimum(target, inside[:, -1:])  # rounding: stay on the block's last positive weight
    position = torch.searchsorted(inside, target)
    return (which * block + position).squeeze(-1).clamp(max=vocab - 1)


def common_prefix_length(sequences: list[list[int]]) -> int:
    if not sequences:
        return 0
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for seq in sequences[1:]:
        i = 0
        while i < length and seq[i] == first[i]:
            i += 1
        length = i
    return length


class SlotLayer(DynamicLayer):
    """One layer's KV cache in a preallocated buffer: decoding writes one column in
    place instead of concatenating the whole cache every step (DynamicLayer's way),
    which cost as much as the attention itself at batch 64 here."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int, headroom: int):
        super().__init__()
        self.is_initialized, self.dtype, self.device = True, keys.dtype, keys.device
        self.keys, self.values, self.length, self.headroom = keys, values, length, headroom

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n = key_states.shape[-2]
        if self.length + n > self.keys.shape[-2]:
            grow = max(n, self.headroom)
            self.keys = torch.cat([self.keys, self.keys.new_zeros(*self.keys.shape[:2], grow, self.keys.shape[-1])], 2)
            self.values = torch.cat([self.values, self.values.new_zeros(*self.values.shape[:2], grow,
                                                                         self.values.shape[-1])], 2)
        self.keys[:, :, self.length:self.length + n] = key_states
        self.values[:, :, self.length:self.length + n] = value_states
        self.length += n
        # The whole buffers, not a slice: matmuls copy a sliced cache to a contiguous one. The
        # engine's mask covers the unwritten columns (`_Batch.mask`).
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.keys.shape[-2], 0

    def get_max_length(self) -> int:
        return -1


class _Batch:
    """Rows in flight: per-layer KV buffers, the 2D attention mask over the whole
    buffer width (left padding and unwritten columns are 0), and per-row state.
    Finished rows stay in place as dead rows until the next rebuild, so the cache
    is copied once per refill rather than once per finished sequence."""

    def __init__(self, headroom: int):
        self.headroom = headroom
        self.cache = None
        self.mask = torch.zeros(0, 0, dtype=torch.long)
        self.rows: list[dict] = []

    @property
    def alive(self) -> int:
        return sum(row["alive"] for row in self.rows)

    def rebuild(self, incoming_cache=None, incoming_mask=None, incoming_rows=()) -> list[int]:
        """Drop dead rows and leading all-padding columns, then append `incoming`
        rows (a prefilled DynamicCache), right-aligning everything in new buffers.
        Returns the old indices of the rows kept, in their new order."""
        keep = [i for i, row in enumerate(self.rows) if row["alive"]]
        parts = []  # (keys per layer, values per layer, mask), each right-aligned later
        if keep:
            index = torch.tensor(keep, dtype=torch.long)
            length = self.cache.layers[0].length
            mask = self.mask[index, :length]
            used = mask.any(0).nonzero()
            start = int(used[0]) if len(used) else 0
            parts.append(([l.keys[index, :, start:length] for l in self.cache.layers],
                          [l.values[index, :, start:length] for l in self.cache.layers], mask[:, start:]))
        if incoming_cache is not None:
            parts.append(([l.keys for l in incoming_cache.layers], [l.values for l in incoming_cache.layers],
                          incoming_mask))
        self.rows = [self.rows[i] for i in keep] + list(incoming_rows)
        if not parts:
            self.cache, self.mask = None, torch.zeros(0, 0, dtype=torch.long)
            return keep
        width = max(p[2].shape[1] for p in parts)
        rows = sum(p[2].shape[0] for p in parts)
        template = parts[0][0]
        layers = []
        for li in range(len(template)):
            k0 = template[li]
            keys = k0.new_zeros(rows, k0.shape[1], width + self.headroom, k0.shape[3])
            values = keys.clone()
            r = 0
            for pk, pv, pm in parts:
                n, w = pm.shape
                keys[r:r + n, :, width - w:width] = pk[li]
                values[r:r + n, :, width - w:width] = pv[li]
                r += n
            layers.append(SlotLayer(keys, values, width, self.headroom))
        self.mask = torch.cat([_left_pad(p[2], width, 1) for p in parts])
        self.mask = torch.cat([self.mask, self.mask.new_zeros(rows, self.headroom)], 1)  # the headroom columns
        if self.cache is None:
            self.cache = incoming_cache
        self.cache.layers = layers
        return keep


def _left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class Engine:
    """Generate completions for many requests with `batch_size` rows in flight."""

    def __init__(self, model, tokenizer, params: SamplingParams, batch_size: int = 64,
                 stop_ids: Iterable[int] | None = None, progress: bool = True, engine: str = "selftrain"):
        if engine not in ("selftrain", "hf"):
            raise InputError(f"generation engine {engine!r}: expected 'selftrain' or 'hf'")
        if batch_size < 1:
            raise InputError(f"batch_size {batch_size}: must be at least 1")
        self.model, self.tokenizer, self.params = model, tokenizer, params
        self.batch_size, self.progress, self.engine = batch_size, progress, engine
        stops = set(stop_ids) if stop_ids is not None else _default_stop_ids(model, tokenizer)
        self.stop_ids = torch.tensor(sorted(stops), dtype=torch.long)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(self.stop_ids[0])
        self.device = next(model.parameters()).device
        self.stats = {"generated_tokens": 0, "seconds": 0.0, "prompt_tokens": 0}
        self._sampler = Sampler(batch_size)

    # ---------------------------------------------------------------- public
    def generate(self, requests: list[TokenRequest]) -> Iterator[TokenCompletion]:
        """Yield one Completion per request, in the order they finish."""
        if not requests:
            return
        for r in requests:
            if not r.prompt_ids:
                raise InputError(f"request {r.key}: empty prompt (nothing to condition on)")
        bar = tqdm(total=len(requests), desc="generate", unit="seq", disable=not self.progress, dynamic_ncols=True)
        start = time.perf_counter()
        runner = self._run_hf if self.engine == "hf" else self._run_continuous
        attention = nullcontext() if self.engine == "hf" else use_decode_attention(self.model)
        try:
            with torch.inference_mode(), attention:
                for completion in runner(requests):
                    self.stats["generated_tokens"] += len(completion.token_ids)
                    elapsed = time.perf_counter() - start
                    bar.set_postfix_str(f"{self.stats['generated_tokens'] / max(elapsed, 1e-9):.0f} tok/s")
                    bar.update(1)
                    yield completion
        finally:
            self.stats["seconds"] += time.perf_counter() - start
            bar.close()

    # ------------------------------------------------------ continuous batching
    def _run_continuous(self, requests: list[TokenRequest]) -> Iterator[TokenCompletion]:
        _check_cache_support(self.model)
        waiting = sorted(requests, key=lambda r: len(r.prompt_ids))  # short first: little padding per group
        prefix_len = common_prefix_length([r.prompt_ids for r in requests])
        prefix_len = min(prefix_len, min(len(r.prompt_ids) for r in requests) - 1)  # every row keeps >= 1 own token
        prefix_cache = self._prefill_prefix(requests[0].prompt_ids[:prefix_len]) if prefix_len > 0 else None
        self.stats["prompt_tokens"] += prefix_len + sum(len(r.prompt_ids) - prefix_len for r in requests)
        refill_at = max(1, self.batch_size // 4)  # refill when a quarter of the slots are free
        stop_set = set(self.stop_ids.tolist())
        # columns added per growth: every decode step reads the unwritten ones too, so 16 rather than 64
        batch = _Batch(headroom=min(self.params.max_new_tokens, 16))
        next_tokens = torch.zeros(0, dtype=torch.long)
        while waiting or batch.alive:
            free = self.batch_size - batch.alive
            if waiting and (free >= refill_at or not batch.alive):
                group, waiting = waiting[:free], waiting[free:]
                cache, mask, rows, first = self._prefill(group, prefix_len, prefix_cache)
                kept = batch.rebuild(cache, mask, rows)
                next_tokens = torch.cat([next_tokens[kept], first])
            elif batch.rows and batch.alive <= (len(batch.rows) * 3) // 4:
                next_tokens = next_tokens[batch.rebuild()]  # the tail: shrink the batch
            # Record the sampled tokens; retire rows that stopped or hit the limit.
            for row, token in zip(batch.rows, next_tokens.tolist()):
                if not row["alive"]:
                    continue
                if token in stop_set:
                    row["alive"] = False
                    yield TokenCompletion(row["key"], row["out"], "stop")
                    continue
                row["out"].append(token)
                if len(row["out"]) >= self.params.max_new_tokens:
                    row["alive"] = False
                    yield TokenCompletion(row["key"], row["out"], "length")
            if not batch.alive:
                continue
            next_tokens = self._decode_step(batch, next_tokens)

    def _prefill_prefix(self, prefix: list[int]):
        ids = torch.tensor([prefix], device=self.device)
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)  # only the cache is used
        return out.past_key_values

    def _prefill(self, group: list[TokenRequest], prefix_len: int, prefix_cache):
        """Run the prompts of `group` (after the shared prefix), left-padded.

        Returns their cache, attention mask, row states and first sampled tokens."""
        suffixes = [r.prompt_ids[prefix_len:] for r in group]
        width = max(len(s) for s in suffixes)
        ids = torch.full((len(group), width), self.pad_id, dtype=torch.long)
        suffix_mask = torch.zeros((len(group), width), dtype=torch.long)
        for i, s in enumerate(suffixes):
            ids[i, width - len(s):] = torch.tensor(s)
            suffix_mask[i, width - len(s):] = 1
        mask = torch.cat([torch.ones(len(group), prefix_len, dtype=torch.long), suffix_mask], dim=1)
        positions = (mask.cumsum(1) - 1).clamp(min=0)[:, prefix_len:]
        cache = _expand_cache(prefix_cache, len(group)) if prefix_cache is not None else None
        out = self.model(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device), past_key_values=cache, use_cache=True,
            logits_to_keep=1,  # the LM head on the last position only (all 13 of a demo prompt: 13x the head)
        )
        rows = []
        for r in group:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(r.seed)
            rows.append({"key": r.key, "out": [], "gen": gen, "alive": True})
        return out.past_key_values, mask, rows, self._sample(out.logits[:, -1, :], rows)

    def _decode_step(self, batch: _Batch, tokens: torch.Tensor) -> torch.Tensor:
        length = batch.cache.layers[0].length
        if length == batch.mask.shape[1]:  # buffers full: every layer grows by `headroom` on this update
            batch.mask = torch.cat([batch.mask, batch.mask.new_zeros(len(batch.rows), batch.headroom)], 1)
        positions = batch.mask.sum(1, keepdim=True)  # next position = real tokens so far
        batch.mask[:, length] = 1
        attend = batch.mask.bool()[:, None, None, :].to(self.device)  # 4D: used as given, no mask building
        out = self.model(
            input_ids=tokens.view(-1, 1).to(self.device), attention_mask=attend,
            position_ids=positions.to(self.device), past_key_values=batch.cache, use_cache=True,
        )
        batch.cache = out.past_key_values
        return self._sample(out.logits[:, -1, :], batch.rows)

    def _sample(self, logits: torch.Tensor, rows: list[dict]) -> torch.Tensor:
        return self._sampler(logits, self.params, [row["gen"] for row in rows])

    # ------------------------------------------------------------ plain HF
    def _run_hf(self, requests: list[TokenRequest]) -> Iterator[TokenCompletion]:
        """model.generate on fixed batches (the baseline); sampling is seeded per batch, not per request."""
        stop_set = set(self.stop_ids.tolist())
        for begin in range(0, len(requests), self.batch_size):
            group = requests[begin:begin + self.batch_size]
            width = max(len(r.prompt_ids) for r in group)
            ids = torch.full((len(group), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, r in enumerate(group):
                ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
                mask[i, width - len(r.prompt_ids):] = 1
            self.stats["prompt_tokens"] += int(mask.sum())
            torch.manual_seed(group[0].seed)
            sampling = self.params.temperature > 0
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                do_sample=sampling, temperature=self.params.temperature if sampling else None,
                top_p=self.params.top_p if sampling else None, top_k=self.params.top_k if sampling else None,
                max_new_tokens=self.params.max_new_tokens, pad_token_id=self.pad_id,
                eos_token_id=self.stop_ids.tolist(),
            )
            for r, row in zip(group, out[:, width:].tolist()):
                tokens, reason = [], "length"
                for t in row:
                    if t in stop_set:
                        reason = "stop"
                        break
                    tokens.append(t)
                yield TokenCompletion(r.key, tokens, reason)


def _default_stop_ids(model, tokenizer) -> set[int]:
    ids = set()
    eos = getattr(model.generation_config, "eos_token_id", None)
    for value in (eos if isinstance(eos, list) else [eos]):
        if value is not None:
            ids.add(int(value))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise InputError("the tokenizer and model define no end-of-sequence token; cannot tell where replies end")
    return ids


def _expand_cache(cache, rows: int):
    import copy

    expanded = copy.copy(cache)
    expanded.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in expanded.layers:
        layer.keys = layer.keys.expand(rows, -1, -1, -1).contiguous()
        layer.values = layer.values.expand(rows, -1, -1, -1).contiguous()
    return expanded


def _check_cache_support(model) -> None:
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    probe = DynamicCache(config=model.config)
    kinds = {type(layer) for layer in probe.layers}
    if kinds and kinds != {DynamicLayer}:
        names = ", ".join(sorted(k.__name__ for k in kinds))
        raise InputError(
            f"generation engine 'selftrain' supports plain full-attention caches; this model uses {names}. "
            f"Set `generation.backend: hf` in the config."
        )
