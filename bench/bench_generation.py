"""Generation benchmark: every generation path on the same prompts, in one run.

Same prompts (the stage-1 prompts of the demo task), same sampling settings,
one path after the other in one process, on this machine's CPU kind (printed;
`make bench` runs it a second time with PyTorch capped to AVX2 kernels and fp32,
the AVX2 kind):

    hf                 plain `model.generate` in fixed batches: the baseline of every ratio
    selftrain          the in-house continuous-batching engine, model in the hardware's dtype
    selftrain_b128     the same with 128 rows in flight instead of 64   (bench only)
    selftrain_b256     the same with 256 rows in flight (the demo's batch_size)
    selftrain_compile  the same with every decoder layer under torch.compile(dynamic=True);
                       its compilation is timed as start-up            (bench only)
    selftrain_int8     the engine on int8 linear layers (selftrain/generation/int8.py)
    llama_cpp          the `llama_cpp` backend: llama.cpp in this process, continuous batching of
                       `batch_size` sequences, on a fresh Q8_0 GGUF export of the model's checkpoint;
                       the export is timed as start-up (needs `make setup-test`, which `make bench` runs)
    llama_cpp_server   the `openai` backend against llama.cpp's server on the embedded model's
                       GGUF (Q4_1 weights; one request at a time)   (not in the default list)

For each path: sampled tokens/s and the ratio to `hf`; greedy agreement with the
full-precision model (the engine on the fp32 model): replies identical, and the
mean share of the reference reply before the first differing token; and the
accuracy its greedy replies score on the demo's held-out problems (`--heldout`).

    .venv/bin/python bench/bench_generation.py [--model smollm2-135m] [--prompts 80]
        [--samples 4] [--max_new_tokens 96] [--temperature 0.8] [--greedy 32] [--heldout 200]
        [--paths hf,selftrain,selftrain_b128,selftrain_b256,selftrain_compile,selftrain_int8,llama_cpp]

"Tokens" are the reply tokens each path reports (up to and excluding the stop
token); the padding `generate` computes after a row has finished is not counted.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from options import pick  # noqa: E402  (bench/options.py)

import torch  # noqa: E402

from selftrain.config import GenerationConfig, load_config  # noqa: E402
from selftrain.data import load_eval_prompts, load_train_prompts  # noqa: E402
from selftrain.generation import Request, SamplingParams, request_seed  # noqa: E402
from selftrain.generation.local import LocalBackend  # noqa: E402
from selftrain.models import cpu_kind, load_model, load_tokenizer, resolve_model  # noqa: E402
from selftrain.prompts import PromptSpec, build_messages, render_prompt  # noqa: E402
from selftrain.stages.evaluate import evaluate_with  # noqa: E402

DEFAULT_PATHS = "hf,selftrain,selftrain_b128,selftrain_b256,selftrain_compile,selftrain_int8,llama_cpp"
PATHS = ("hf", "selftrain", "selftrain_b128", "selftrain_b256", "selftrain_compile", "selftrain_int8", "llama_cpp", "llama_cpp_server")


def requests_for(records, tokenizer, spec, samples: int, params: SamplingParams) -> list[Request]:
    out = []
    for r in records:
        text, messages = render_prompt(tokenizer, r, spec), tuple(build_messages(r, spec))
        out += [Request(f"{r['id']}#{j}", text, messages, params, request_seed(0, f"{r['id']}#{j}"))
                for j in range(samples)]
    return out


def open_path(name: str, args, tokenizer, spec):
    """(backend, start-up seconds) for one path, on a freshly loaded model (int8 replaces layers in place)."""
    started = time.perf_counter()
    if name == "llama_cpp":
        from selftrain.generation.gguf_export import export_gguf
        from selftrain.generation.llama_cpp_local import LlamaCppBackend

        out = Path(tempfile.mkdtemp(prefix="bench-gguf-")) / "model-q8_0.gguf"
        try:
            export_gguf(resolve_model(args.model), out, "q8_0")
            backend = LlamaCppBackend(args.model, spec, batch_size=args.batch_size, progress=False,
                                      tokenizer=tokenizer, gguf_path=out)
        finally:
            shutil.rmtree(out.parent)  # llama.cpp holds the file open (mapped) until the backend closes
        return backend, time.perf_counter() - started
    if name == "llama_cpp_server":
        from selftrain.generation.server import LaunchedServerBackend

        gen = GenerationConfig(backend="openai", server="llama_cpp", max_concurrency=8)
        backend = LaunchedServerBackend(gen, args.model, progress=False).__enter__()
        return backend, time.perf_counter() - started
    model = load_model(args.model, dtype=args.dtype)
    engine = {"hf": "hf", "selftrain_int8": "selftrain_int8"}.get(name, "selftrain")
    batch = {"selftrain_b128": 128, "selftrain_b256": 256}.get(name, args.batch_size)
    backend = LocalBackend(args.model, spec, engine=engine, batch_size=batch, progress=False,
                           model=model, tokenizer=tokenizer)
    if name == "selftrain_compile":
        for layer in model.model.layers:
            layer.compile(dynamic=True)
        warm = requests_for(args.records[:8], tokenizer, spec, 1, SamplingParams(0.8, 1.0, 0, args.max_new_tokens))
        list(backend.generate(warm))  # compile the prefill and decode graphs before timing
    return backend, time.perf_counter() - started


def prefix_share(got: tuple, ref: tuple) -> float:
    same = 0
    for a, b in zip(got, ref):
        if a != b:
            break
        same += 1
    return same / max(len(ref), 1) if got != ref else 1.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dtype", default="auto", help="dtype of every path's model (auto: the hardware's)")
    p.add_argument("--prompts", type=int, default=80)
    p.add_argument("--samples", type=int, default=4, help="samples per prompt (the demo's 4)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_new_tokens", type=int, default=96)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--greedy", type=int, default=32, help="prompts for the greedy agreement check (0: none)")
    p.add_argument("--heldout", type=int, default=200, help="held-out problems scored per path (0: none)")
    p.add_argument("--paths", default=DEFAULT_PATHS)
    args = p.parse_args()
    paths = pick(args.paths, PATHS, "path")
    emulated = [name for name in paths if name.startswith("llama_cpp")] if os.environ.get("ATEN_CPU_CAPABILITY") else []
    if emulated and args.paths == DEFAULT_PATHS:
        print(f"skipping {', '.join(emulated)} under ATEN_CPU_CAPABILITY: llama.cpp runs its own -march=native build, "
              f"which the AVX2 emulation does not cap (name it in --paths to run it anyway)")
        paths = [name for name in paths if name not in emulated]

    config = load_config("configs/demo.yaml", {"task.n_train": args.prompts, "max_new_tokens": args.max_new_tokens,
                                               "generation.backend": "selftrain"})
    tokenizer = load_tokenizer(args.model)
    spec = PromptSpec.from_config(config)
    args.records = load_train_prompts(config, 1)[: args.prompts]
    heldout = load_eval_prompts(config, "test")[: args.heldout]
    params = SamplingParams(args.temperature, 1.0, 0, args.max_new_tokens)
    sampled = requests_for(args.records, tokenizer, spec, args.samples, params)
    greedy = requests_for(args.records[: args.greedy], tokenizer, spec, 1, SamplingParams(0.0, 1.0, 0, args.max_new_tokens))
    print(f"CPU kind {cpu_kind()} ({torch.get_num_threads()} threads), model {args.model}, {len(sampled)} requests, "
          f"batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, temperature {args.temperature}; "
          f"greedy agreement on {len(greedy)} prompts, accuracy on {len(heldout)} held-out problems")

    reference = {}
    if greedy:
        fp32 = LocalBackend(args.model, spec, engine="selftrain", batch_size=args.batch_size, progress=False,
                            model=load_model(args.model, dtype="fp32"), tokenizer=tokenizer)
        reference = {c.key: c.token_ids for c in fp32.generate(greedy)}
    rows = []
    for name in paths:
        backend, startup = open_path(name, args, tokenizer, spec)
        try:
            before = backend.stats.completion_tokens
            started = time.perf_counter()
            completions = list(backend.generate(sampled))
            seconds = time.perf_counter() - started
            tokens = backend.stats.completion_tokens - before
            got = {c.key: c.token_ids for c in backend.generate(greedy)} if greedy else {}
            accuracy = evaluate_with(backend, tokenizer, config, heldout, spec)[0]["accuracy"] if heldout else None
            dtype = backend.describe().get("linear", "gguf")
        finally:
            backend.__exit__(None, None, None)
        identical = sum(got[k] == reference[k] for k in reference)
        share = sum(prefix_share(got[k], reference[k]) for k in reference) / max(len(reference), 1)
        rows.append((name, dtype, tokens, seconds, startup, identical, share, accuracy))
        print(f"{name:>18}: {tokens:6d} tokens in {seconds:6.1f} s = {tokens / seconds:7.1f} tokens/s "
              f"(mean reply {tokens / len(completions):.1f}; start-up {startup:.1f} s)", flush=True)

    base = next((r for r in rows if r[0] == "hf"), None)
    print(f"\n| path | linear layers | tokens/s | vs `model.generate` | greedy replies = fp32 | "
          f"fp32 reply prefix kept | held-out accuracy |\n|---|---|---|---|---|---|---|")
    for name, dtype, tokens, seconds, startup, identical, share, accuracy in rows:
        ratio = f"{(tokens / seconds) / (base[2] / base[3]):.2f}x" if base else "-"
        acc = f"{accuracy * 100:.1f}%" if accuracy is not None else "-"
        if name.startswith("llama_cpp") and os.environ.get("ATEN_CPU_CAPABILITY"):
            name += " (llama.cpp's own -march=native build: not capped by the emulation)"
        print(f"| {name} | {dtype} | {tokens / seconds:.1f} | {ratio} | {identical}/{len(reference)} | "
              f"{share * 100:.0f}% | {acc} |")


if __name__ == "__main__":
    main()
