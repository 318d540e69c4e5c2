"""The `llama_cpp` backend: llama.cpp in this process, through llama-cpp-python's C API, on the
model's GGUF file (`gguf_export.gguf_of`: a trained checkpoint's export in `generation.gguf_type`,
made on first use; the embedded model's own shipped file).

Same contract as the local backends (local.py): prompts arrive as rendered text and are encoded
by the checkpoint's HF tokenizer with `prompts.encode_prompt`, and those token ids go to llama.cpp
as they are (llama.cpp never tokenizes), so every backend sees the same prompt; replies leave
decoded by the same tokenizer, with their token ids. Stop tokens follow the engine's rule
(the model's generation-config EOS ids plus the tokenizer's).

Decoding is batched and continuous: up to `batch_size` sequences, each with its own llama.cpp
`seq_id` and its own slice of the KV cache, advance together in one `llama_decode` per step; a
sequence that finishes frees its slot (its cache cells are removed) and a waiting prompt takes it
in the same step, its prompt tokens decoded in the same call as the other rows' next tokens.
Sampling happens here, not in llama.cpp: argmax when greedy, else the engine's `sample_next` on
the logits with one torch.Generator per request seeded with its seed, so a request's reply does
not depend on which other requests share its batch. The KV cache is llama.cpp's default f16, or
f32 for an f32 GGUF (which then runs exactly: tests/test_gguf_export.py).

Speed: docs/backends-and-speed.md (below `model.generate` on the AVX-512 bf16 kind, so `auto`
never picks it; choose.py).
"""
from __future__ import annotations

import ctypes
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from selftrain.errors import InputError
from selftrain.generation.base import (BackendError, Completion, GenerationStats, OptionLogprobs, Request,
                                       SamplingParams, ScoreRequest)
from selftrain.logging import log
from selftrain.generation.engine import Sampler
from selftrain.generation.local import PromptTokens
from selftrain.prompts import PromptSpec

N_BATCH = 2048  # tokens per llama_decode call (prompt tokens of new rows + one token per running row)
N_UBATCH = 512  # llama.cpp's physical batch: its own default


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:
        raise InputError(f"generation.backend: llama_cpp needs llama-cpp-python ({exc}), a test dependency: run "
                         f"`make setup-test` (it compiles llama.cpp once)") from None
    return llama_cpp


_log_callback = None  # kept referenced: llama.cpp calls it for as long as the process lives


def _quiet(llama_cpp) -> None:
    """llama.cpp logs every model load and context creation to stderr; keep only its errors."""
    global _log_callback
    if _log_callback is None:
        import sys

        def forward(level, text, user_data):
            if level == 3:  # GGML_LOG_LEVEL_ERROR
                sys.stderr.write(text.decode("utf-8", "replace"))

        _log_callback = llama_cpp.llama_log_callback(forward)
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()


class LlamaCppBackend:
    """`gguf_path` (benchmarks, tests) runs that file instead of `gguf_of(model_name, gguf_type)`;
    `tokenizer` reuses one already loaded."""

    name = "llama_cpp"

    def __init__(self, model_name: str, spec: PromptSpec, *, gguf_type: str = "q8_0", batch_size: int = 64,
                 progress: bool = True, tokenizer=None, threads: int | None = None, gguf_path=None):
        from selftrain.generation.gguf_export import gguf_of
        from selftrain.models import load_tokenizer

        self._model = self._ctx = self._batch = None  # what close() frees, whatever fails below
        self._logits = None  # the per-step logits buffer, reused (a fresh 50 MB per step costs ms)
        self._kept_prefix = None  # score_options: the token ids whose cache sequence 0 holds
        llama_cpp = _llama_cpp()
        if str(model_name).lower().endswith(".gguf"):
            raise InputError(f"generation.backend llama_cpp: model {model_name} is a .gguf file; this backend encodes "
                             f"prompts with the model's HF tokenizer (as every local backend does): give the checkpoint "
                             f"directory (a .gguf inside it is used) or the embedded model's name")
        if batch_size < 1:
            raise InputError(f"batch_size {batch_size}: must be at least 1")
        self.model_name, self.spec, self.progress = model_name, spec, progress
        self.llama = llama_cpp
        started = time.perf_counter()
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_name)
        self.stop_ids = _stop_ids(model_name, self.tokenizer)
        self.gguf = Path(gguf_path) if gguf_path is not None else gguf_of(model_name, gguf_type)
        self.linear = _file_type(self.gguf)
        self.threads = threads or torch.get_num_threads()
        self.batch_size = min(batch_size, int(llama_cpp.llama_max_parallel_sequences()))
        self._sample = Sampler(self.batch_size)
        _quiet(llama_cpp)
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        self._model = llama_cpp.llama_model_load_from_file(str(self.gguf).encode(), params)
        if not self._model:
            raise InputError(f"llama.cpp could not load {self.gguf} (a damaged or unsupported GGUF file)")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        if self.n_vocab < len(self.tokenizer):
            self.close()
            raise InputError(f"{self.gguf}: {self.n_vocab} tokens, fewer than the tokenizer of {model_name} "
                             f"({len(self.tokenizer)}): not this model's GGUF")
        self._ctx_cells = 0  # KV cells per sequence of the current context
        self.stats = GenerationStats()
        self.encode = PromptTokens(self.tokenizer, spec)
        log(f"llama.cpp on {self.gguf} ({self.linear}, {self.threads} threads, up to {self.batch_size} sequences) "
            f"ready in {time.perf_counter() - started:.1f}s")

    # ------------------------------------------------------------ life cycle
    def __enter__(self) -> "LlamaCppBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Free the batch, the context (its KV cache) and the model; idempotent."""
        if self._batch is not None:
            self.llama.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            self.llama.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            self.llama.llama_model_free(self._model)
            self._model = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model_name, "gguf": str(self.gguf), "linear": self.linear,
                "device": "cpu", "threads": self.threads}

    # ------------------------------------------------------------ generation
    def generate(self, requests: Iterable[Request]) -> Iterator[Completion]:
        for params, group in self.encode.groups(requests).items():  # one run per sampling setting, as local.py
            yield from self._run(params, group)

    def _run(self, params: SamplingParams, group: list[tuple[Request, list[int]]]) -> Iterator[Completion]:
        llama = self.llama
        self._ensure_context(max(len(ids) for _, ids in group) + params.max_new_tokens)
        memory = llama.llama_get_memory(self._ctx)
        llama.llama_memory_clear(memory, True)
        self._kept_prefix = None
        stop = set(self.stop_ids)
        waiting = deque(group)
        free = list(range(self.batch_size - 1, -1, -1))  # seq ids; pop() takes the lowest
        rows: dict[int, dict] = {}  # seq id -> the request in flight there
        bar = tqdm(total=len(group), desc="generate (llama.cpp)", unit="seq", disable=not self.progress,
                   dynamic_ncols=True)
        started, generated = time.perf_counter(), 0
        try:
            while waiting or rows:
                feed = []  # (seq id, tokens, first position): one entry per row this step
                for seq, row in rows.items():
                    feed.append((seq, [row["next"]], row["pos"]))
                while waiting and free:
                    request, ids = waiting.popleft()
                    seq = free.pop()
                    gen = torch.Generator(device="cpu")
                    gen.manual_seed(request.seed)
                    rows[seq] = {"request": request, "out": [], "gen": gen, "pos": 0}
                    feed.append((seq, ids, 0))
                    self.stats.prompt_tokens += len(ids)
                order = [seq for seq, _, _ in feed]
                # one call for the running rows' next tokens and the new prompts: measured 66-73 s for the
                # bench's 128 requests, against 77 s with the prompts in a call of their own
                logits = self._decode(feed)
                sampled = self._sample(logits, params, [rows[s]["gen"] for s in order])
                for seq, (_, tokens, pos), token in zip(order, feed, sampled.tolist()):
                    row = rows[seq]
                    row["pos"] = pos + len(tokens)
                    reason = None
                    if token in stop:
                        reason = "stop"
                    else:
                        row["out"].append(token)
                        row["next"] = token
                        if len(row["out"]) >= params.max_new_tokens:
                            reason = "length"
                    if reason is None:
                        continue
                    del rows[seq]
                    llama.llama_memory_seq_rm(memory, seq, -1, -1)
                    free.append(seq)
                    free.sort(reverse=True)
                    out = row["out"]
                    generated += len(out)
                    self.stats.completions += 1
                    self.stats.completion_tokens += len(out)
                    bar.set_postfix_str(f"{generated / max(time.perf_counter() - started, 1e-9):.0f} tok/s")
                    bar.update(1)
                    yield Completion(row["request"].key, self.tokenizer.decode(out, skip_special_tokens=True),
                                     len(out), reason, tuple(out))
        finally:
            self.stats.requests += len(group)
            self.stats.seconds += time.perf_counter() - started
            bar.close()

    # ------------------------------------------------------------ scoring
    def score_options(self, requests: Iterable[ScoreRequest]) -> Iterator[OptionLogprobs]:
        """Option log-probabilities from llama.cpp's logits (expected-score judging), as prefill.py does
        for the local backends: the shared prefix is decoded once into sequence 0 and kept; each request
        decodes only its own tokens after it, alone, once the previous request's are removed (so they
        take the same cells every time). A request's result never depends on the others, and a stage
        resumed after a kill scores exactly as an unbroken one (tests/test_gguf_export.py)."""
        from selftrain.generation.prefill import prepared, reused_length

        llama = self.llama
        for r, ids, shared, option_ids in prepared(requests, self.tokenizer, self.encode):
            started = time.perf_counter()
            n = reused_length(ids, shared)
            self._ensure_context(len(ids))
            memory = llama.llama_get_memory(self._ctx)
            if self._kept_prefix != tuple(ids[:n]):
                llama.llama_memory_clear(memory, True)
                self._kept_prefix = None
                if n:
                    self._decode([(0, ids[:n], 0)])
                    self.stats.prompt_tokens += n
                self._kept_prefix = tuple(ids[:n])
            llama.llama_memory_seq_rm(memory, 0, n, -1)  # the previous request's own tokens
            logits = self._decode([(0, ids[n:], n)])[0]
            self.stats.prompt_tokens += len(ids) - n
            self.stats.requests += 1
            self.stats.completions += 1
            logp = logits.double().log_softmax(-1)
            self.stats.seconds += time.perf_counter() - started
            yield OptionLogprobs(r.key, tuple(float(logp[i]) for i in option_ids))

    def _ensure_context(self, cells_per_sequence: int) -> None:
        """A context with `batch_size` sequences of at least `cells_per_sequence` KV cells each (made anew
        only when a longer run needs more)."""
        llama = self.llama
        if self._ctx is not None and self._ctx_cells >= cells_per_sequence:
            return
        if self._ctx is not None:
            llama.llama_free(self._ctx)
            self._ctx = None
        self._kept_prefix = None
        cells = -(-cells_per_sequence // 256) * 256  # rounded up: a slightly longer run reuses the context
        params = llama.llama_context_default_params()
        params.n_seq_max = self.batch_size
        params.n_ctx = cells * self.batch_size
        params.n_batch, params.n_ubatch = N_BATCH, N_UBATCH
        params.n_threads = params.n_threads_batch = self.threads
        params.kv_unified = False  # every sequence its own cache stream: 1.4x the tokens/s of one shared stream
        if self.linear == "f32":  # f32 weights run exactly: llama.cpp's f16 KV cache moved logits by up to 0.05
            params.type_k = params.type_v = llama.GGML_TYPE_F32
        params.no_perf = True
        self._ctx = llama.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise InputError(f"llama.cpp could not create a context of {self.batch_size} sequences x {cells} "
                             f"tokens for {self.gguf} (out of memory? lower batch_size or max_new_tokens)")
        self._ctx_cells = int(llama.llama_n_ctx_seq(self._ctx))
        if self._ctx_cells < cells_per_sequence:
            raise InputError(f"llama.cpp gave {self._ctx_cells} KV cells per sequence, {cells_per_sequence} needed "
                             f"(prompt + max_new_tokens) for {self.gguf}")
        if self._batch is None:
            self._batch = llama.llama_batch_init(N_BATCH, 0, 1)

    def _decode(self, feed: list[tuple[int, list[int], int]]) -> torch.Tensor:
        """Decode every row's tokens (in calls of at most N_BATCH tokens); the logits after each row's
        last token, one row per entry of `feed`, in its order."""
        llama, batch = self.llama, self._batch
        if self._logits is None or self._logits.shape[0] < len(feed):
            self._logits = np.empty((max(self.batch_size, len(feed)), self.n_vocab), dtype=np.float32)
        out = self._logits[:len(feed)]
        done = 0  # rows whose logits are in `out`
        pending = []  # rows whose last token is in the current call
        batch.n_tokens = 0

        def flush():
            nonlocal done
            code = llama.llama_decode(self._ctx, batch)
            if code != 0:
                raise BackendError(f"llama.cpp: llama_decode returned {code} on {batch.n_tokens} tokens "
                                   f"({'no KV cache slot' if code == 1 else 'an error'}; {self.gguf})")
            if pending:  # the call's outputs, contiguous in batch order
                block = np.ctypeslib.as_array(llama.llama_get_logits(self._ctx), shape=(len(pending), self.n_vocab))
                out[done:done + len(pending)] = block
                done += len(pending)
            pending.clear()
            batch.n_tokens = 0

        for i, (seq, tokens, pos) in enumerate(feed):
            for j, token in enumerate(tokens):
                if batch.n_tokens == N_BATCH:
                    flush()
                k = batch.n_tokens
                batch.token[k] = token
                batch.pos[k] = pos + j
                batch.n_seq_id[k] = 1
                batch.seq_id[k][0] = seq
                last = j == len(tokens) - 1
                batch.logits[k] = last
                if last:
                    pending.append(i)
                batch.n_tokens = k + 1
        if batch.n_tokens:
            flush()
        return torch.from_numpy(out)


def _stop_ids(model_name: str, tokenizer) -> list[int]:
    """The engine's stop rule (`engine._default_stop_ids`) on the checkpoint's generation config."""
    from transformers import AutoConfig, GenerationConfig

    from selftrain.generation.engine import _default_stop_ids
    from selftrain.models import resolve_model

    location = resolve_model(model_name)
    try:
        generation_config = GenerationConfig.from_pretrained(location)
    except OSError:  # no generation_config.json: what transformers derives from config.json
        generation_config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(location))
    return sorted(_default_stop_ids(SimpleNamespace(generation_config=generation_config), tokenizer))


def _file_type(path) -> str:
    """The GGUF's weight type as llama.cpp names it (general.file_type): q8_0, f16, f32, q4_1, ..."""
    import gguf

    reader = gguf.GGUFReader(path)
    field = reader.fields.get("general.file_type")
    if field is None:
        return "unknown"
    value = int(field.parts[field.data[0]][0])
    try:
        name = gguf.LlamaFileType(value).name
    except ValueError:
        return f"file_type {value}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()
