"""Generation behind one text-level interface.

A stage builds `Request`s (a key, the prompt rendered by the one prompt builder
with the student's tokenizer and/or the chat messages, sampling parameters and
a per-request seed), hands them to a backend and gets `Completion`s back (key,
text, generated-token count, finish reason), in the order they finish. What
produced a reply never changes what the training data holds: the stage keeps
its own `prompt_text`.

Backends (`generation.backend` in the config):

    auto        the fastest measured path for this machine and stage (choose.py)
    selftrain   the in-house continuous-batching engine on a local HF model (engine.py)
    selftrain_int8  the same engine on int8 linear layers (int8.py): an approximation
    hf          plain `model.generate` on a local HF model (the baseline)
    llama_cpp   llama.cpp in this process (llama-cpp-python's C API, continuous batching) on the
                model's GGUF: a checkpoint's export in `generation.gguf_type`, made on first use and
                cached beside it (gguf_export.py, llama_cpp_local.py)
    openai      any OpenAI-compatible server through the `openai` client (openai_compat.py);
                with `generation.server` set, the stage launches that server for its own
                model first and always stops it (server.py)

Every backend keeps `stats` (requests, prompt and completion tokens, seconds)
and is a context manager: `with get_backend(...) as backend:` releases what it
holds (a launched server, a client pool) on success, error or Ctrl-C.
"""
from __future__ import annotations

from selftrain.errors import InputError
from selftrain.generation.base import (  # noqa: F401 - the package's public types
    BACKENDS, FINISH_REASONS, Backend, BackendError, CallUsage, Completion, GenerationStats, OptionLogprobs, Request,
    SamplingParams, ScoreRequest,
    request_seed,
)


def get_backend(config, model_name: str, spec, *, batch_size: int, role: str, progress: bool = True) -> Backend:
    """The backend for a stage of `role` (`choose.ROLES`) on `model_name` (a local checkpoint, the
    embedded model or a hub id; for `openai`, what the server serves unless `generation.model`
    names it), prompts encoded by `spec`. Logs which backend and why."""
    from selftrain.generation.choose import choose_backend
    from selftrain.logging import log

    gen = config.generation
    name, reason = choose_backend(config, role)
    log(f"generation backend: {name} ({reason})")
    backend = _open(config, gen, name, model_name, spec, batch_size, progress)
    backend.chosen_by = reason
    return backend


def _open(config, gen, name: str, model_name: str, spec, batch_size: int, progress: bool) -> Backend:
    if name in ("selftrain", "selftrain_int8", "hf"):
        from selftrain.generation.local import LocalBackend

        return LocalBackend(model_name, spec, engine=name, dtype=config.dtype, batch_size=batch_size,
                            progress=progress)
    if name == "llama_cpp":
        from selftrain.generation.llama_cpp_local import LlamaCppBackend

        return LlamaCppBackend(model_name, spec, gguf_type=gen.gguf_type, batch_size=batch_size, progress=progress)
    if name == "openai":
        if gen.server:
            from selftrain.generation.server import LaunchedServerBackend

            return LaunchedServerBackend(gen, model_name, progress=progress)
        from selftrain.generation.openai_compat import OpenAIBackend

        return OpenAIBackend(gen, served_model=gen.model or model_name, progress=progress)
    raise InputError(f"generation.backend: {name!r} is not one of {', '.join(BACKENDS)}")
