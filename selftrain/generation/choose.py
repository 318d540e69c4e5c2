"""`generation.backend: auto`: which path generates, chosen per machine and per stage.

The rule encodes what `bench/bench_generation.py` measured (README: "Generation
speed", with the commit and CPU kind of each figure):

- Evaluation stays exact: the in-house engine on the model in the hardware's
  dtype (bf16 on the AVX-512 bf16 kind and on GPUs, fp32 elsewhere), unless the
  config opts in with `generation.approximate_eval: true`.
- Sampling for training data (stage 1, rationalization) on a CPU uses the engine
  on int8 linear layers (`int8.py`): on both CPU kinds it was the fastest path,
  and its held-out accuracy was within the noise of the exact engine's; every
  sample is still judged by the reward before anything is kept.
- On a GPU every stage uses the exact engine: the int8 kernel is a CPU path.

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
    if device.type != "cpu":
        return "selftrain", f"auto on {device.type}: the exact engine (the int8 path is for CPUs)"
    kind = cpu_kind()
    if role == "eval" and not gen.approximate_eval:
        return "selftrain", f"auto on {kind}: evaluation stays exact (generation.approximate_eval: false)"
    if kind not in ("avx512_bf16", "avx512", "avx2"):
        return "selftrain", f"auto on {kind}: the int8 path was measured on AVX2 and AVX-512 CPUs only"
    what = "sampling for training data" if role == "sample" else "evaluation (generation.approximate_eval: true)"
    return "selftrain_int8", f"auto on {kind}: int8 linear layers for {what}, the fastest path measured"
