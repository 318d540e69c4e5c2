"""`generation.backend: auto`: which path generates, chosen per machine and per stage.

The rule encodes what `bench/bench_generation.py` measured (docs/backends-and-speed.md,
"Generation speed", with the commit and CPU kind of each figure):

- Every stage uses the in-house engine on the model in the hardware's dtype
  (bf16 on the AVX-512 bf16 kind and on GPUs, fp32 elsewhere): it was the
  fastest exact path on both CPU kinds (2.9-3.6x `model.generate` on AVX-512
  bf16, 1.4-1.9x on AVX2 kernels; more rows in flight is `batch_size`).
- The int8 path (`selftrain_int8`) is never chosen automatically: its held-out
  accuracy was not within noise of the exact engine's (2.5% vs 13.5% on AVX2
  kernels), and on AVX-512 it was no faster than bf16. Sampling for training
  data may use an approximate path only where it costs no accuracy, so auto
  keeps the exact one; evaluation is always exact under auto. A user who wants
  the int8 path anyway forces it, for every stage.

- llama.cpp in this process (`llama_cpp`, on a GGUF export of the checkpoint) is never
  chosen automatically: on the q8_0 export it ran below `model.generate` (0.52x) on the
  AVX-512 bf16 kind.

A forced `generation.backend` runs every stage with that backend. Either way the
choice and its reason are logged and written into the stage's marker.
"""
from __future__ import annotations

ROLES = ("sample", "eval")  # sampling for training data | greedy evaluation


def choose_backend(config, role: str) -> tuple[str, str]:
    """(backend name, why) for a stage of `role`."""
    from selftrain.models import cpu_kind, default_device

    if role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    gen = config.generation
    if gen.backend != "auto":
        return gen.backend, f"set by generation.backend: {gen.backend}"
    device = default_device()
    where = device.type if device.type != "cpu" else cpu_kind()
    if role == "eval":
        return "selftrain", f"auto on {where}: the exact engine; evaluation stays exact"
    return "selftrain", (f"auto on {where}: the exact engine (the approximate int8 path lost held-out accuracy "
                         f"in the benchmark, so sampling does not use it)")
