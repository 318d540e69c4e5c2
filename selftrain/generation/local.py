"""The local backends: a Hugging Face model in this process, driven by the
in-house engine (`selftrain`), by the same engine on int8 linear layers
(`selftrain_int8`, CPU only) or by plain `model.generate` (`hf`).

Prompts arrive as the rendered text and are encoded here with the same rule
the training data uses (`prompts.encode_prompt`); replies leave as text,
decoded without special tokens, with their token ids kept for comparisons.
"""
from __future__ import annotations

import time
from typing import Iterable, Iterator

from selftrain.errors import InputError
from selftrain.generation.base import BackendError, Completion, GenerationStats, OptionLogprobs, Request, ScoreRequest
from selftrain.logging import log
from selftrain.prompts import PromptSpec, encode_prompt


class PromptTokens:
    """Rendered prompts -> token ids by the rule the training data uses, cached (N samples share
    one prompt), and requests grouped by sampling setting: what every backend that feeds a
    local model token ids (this module's, llama_cpp_local.py) does before it generates."""

    def __init__(self, tokenizer, spec: PromptSpec):
        self.tokenizer, self.spec = tokenizer, spec
        self._ids: dict[str, list[int]] = {}

    def __call__(self, text: str) -> list[int]:
        if text not in self._ids:
            self._ids[text] = list(encode_prompt(self.tokenizer, text, self.spec))
        return self._ids[text]

    def groups(self, requests: Iterable[Request]) -> dict:
        """{sampling params: [(request, prompt ids), ...]}, in first-seen order; every prompt checked
        before any generates."""
        groups: dict = {}
        for r in requests:
            if r.prompt_text is None:
                raise BackendError(f"request {r.key}: no prompt_text (a local model needs the rendered prompt)")
            ids = self(r.prompt_text)
            if not ids:
                raise InputError(f"request {r.key}: empty prompt (nothing to condition on)")
            groups.setdefault(r.params, []).append((r, ids))
        return groups


class LocalBackend:
    def __init__(self, model_name: str, spec: PromptSpec, *, engine: str = "selftrain", dtype: str = "auto",
                 batch_size: int = 64, progress: bool = True, model=None, tokenizer=None):
        from selftrain.models import load_model, load_tokenizer

        self.name, self.model_name, self.spec = engine, model_name, spec
        self.batch_size, self.progress = batch_size, progress
        started = time.perf_counter()
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_name)
        self.model = model if model is not None else load_model(model_name, dtype=dtype)
        self.linear = str(self.model.dtype).removeprefix("torch.")
        if engine == "selftrain_int8":
            self.linear = "int8"
            _quantize(self.model, model_name)
        if model is None:
            log(f"loaded {model_name} ({self.model.dtype}, {self.model.device}, {self.linear} linear layers) in "
                f"{time.perf_counter() - started:.1f}s")
        self.stats = GenerationStats()
        self.encode = PromptTokens(self.tokenizer, spec)
        self._scorer = None  # expected-score judging's prefix scorer, made on first use

    def __enter__(self) -> "LocalBackend":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model_name, "dtype": str(self.model.dtype).removeprefix("torch."),
                "linear": self.linear, "device": str(self.model.device)}

    def generate(self, requests: Iterable[Request]) -> Iterator[Completion]:
        from selftrain.generation.engine import Engine, TokenRequest

        for params, pairs in self.encode.groups(requests).items():  # one engine run per sampling setting
            group = [TokenRequest(r.key, ids, r.seed) for r, ids in pairs]
            engine = Engine(self.model, self.tokenizer, params, batch_size=self.batch_size, progress=self.progress,
                            engine="hf" if self.name == "hf" else "selftrain")
            try:
                for c in engine.generate(group):
                    self.stats.completions += 1
                    self.stats.completion_tokens += len(c.token_ids)
                    yield Completion(c.key, self.tokenizer.decode(c.token_ids, skip_special_tokens=True),
                                     len(c.token_ids), c.finish_reason, tuple(c.token_ids))
            finally:
                self.stats.requests += len(group)
                self.stats.prompt_tokens += engine.stats["prompt_tokens"]
                self.stats.seconds += engine.stats["seconds"]


    def score_options(self, requests: Iterable[ScoreRequest]) -> Iterator[OptionLogprobs]:
        """Option log-probabilities from the model's logits, the shared prefix's cache computed once
        (prefill.py: each request alone on that cache, so its result never depends on the others)."""
        from selftrain.generation.prefill import PrefixScorer

        if self._scorer is None:
            self._scorer = PrefixScorer(self.model, self.encode)
        before = dict(self._scorer.stats)
        try:
            for result in self._scorer.score(requests, self.tokenizer):
                self.stats.completions += 1
                yield result
        finally:
            spent = {k: self._scorer.stats[k] - before[k] for k in before}
            self.stats.requests += spent["requests"]
            self.stats.prompt_tokens += spent["prompt_tokens"]
            self.stats.seconds += spent["seconds"]


def _quantize(model, model_name: str) -> None:
    """int8 linear layers in place, or a clear error where the int8 kernel cannot run."""
    import torch

    from selftrain.generation.int8 import quantize_linears

    device = next(model.parameters()).device
    if device.type != "cpu":
        raise InputError(f"generation.backend selftrain_int8 runs on CPU only (its int8 matmul is measured for CPU "
                         f"kernels); this model is on {device.type}: use selftrain")
    try:
        probe = torch.ones(2, 8, dtype=torch.int8)
        torch._int_mm(probe, probe.t())
    except RuntimeError as exc:
        raise InputError(f"generation.backend selftrain_int8: PyTorch's int8 matmul does not run on this CPU "
                         f"({exc}); use selftrain") from None
    replaced = quantize_linears(model)
    log(f"{model_name}: {replaced} linear layers quantized to int8 (per-channel weights, per-token activations)")
