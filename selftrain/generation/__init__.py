"""Generation behind one text-level interface.

A stage builds `Request`s (a key, the prompt rendered by the one prompt builder
with the student's tokenizer and/or the chat messages, sampling parameters and
a per-request seed), hands them to a backend and gets `Completion`s back (key,
text, generated-token count, finish reason), in the order they finish. What
produced a reply never changes what the training data holds: the stage keeps
its own `prompt_text`.

Backends (`generation.backend` in the config):

    selftrain   the in-house continuous-batching engine on a local HF model (engine.py)
    hf          plain `model.generate` on a local HF model (the baseline)
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
    BACKENDS, FINISH_REASONS, Backend, BackendError, Completion, GenerationStats, Request, SamplingParams,
    request_seed,
)


def get_backend(config, model_name: str, spec, *, batch_size: int, progress: bool = True) -> Backend:
    """The configured backend for `model_name` (a local checkpoint, the embedded model or a hub id;
    for `openai`, what the server serves unless `generation.model` names it), prompts encoded by `spec`."""
    gen = config.generation
    if gen.backend in ("selftrain", "hf"):
        from selftrain.generation.local import LocalBackend

        return LocalBackend(model_name, spec, engine=gen.backend, dtype=config.dtype, batch_size=batch_size,
                            progress=progress)
    if gen.backend == "openai":
        if gen.server:
            from selftrain.generation.server import LaunchedServerBackend

            return LaunchedServerBackend(gen, model_name, progress=progress)
        from selftrain.generation.openai_compat import OpenAIBackend

        return OpenAIBackend(gen, served_model=gen.model or model_name, progress=progress)
    raise InputError(f"generation.backend: {gen.backend!r} is not one of {', '.join(BACKENDS)}")
