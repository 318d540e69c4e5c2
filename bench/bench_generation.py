"""Generation benchmark: every backend on the same prompts, in one run.

Same prompts (the stage-1 prompts of the demo task), same sampling settings,
one after the other in one process:

    selftrain   the in-house continuous-batching engine (local HF model)
    hf          plain `model.generate` in fixed batches (the baseline of every ratio)
    llama_cpp   the `openai` backend against llama.cpp's OpenAI-compatible server
                (`llama_cpp.server`), launched by the backend on the embedded model's
                GGUF file (Q4_1 weights: not the same numbers as the HF checkpoint)

    .venv/bin/python bench/bench_generation.py [--model smollm2-135m] [--prompts 64]
        [--samples 2] [--batch_size 64] [--max_new_tokens 96] [--temperature 0.8] [--k 0]
        [--backends selftrain,hf,llama_cpp] [--greedy 32]

"Tokens" are the reply tokens each backend reports (up to and excluding the stop
token); the padding `generate` computes after a row has finished is not counted.
A server's start-up is timed apart from its generation. `--greedy N` also runs
the first N prompts greedily through each backend and prints the share of
replies identical to the in-house engine's.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from selftrain.config import GenerationConfig, load_config  # noqa: E402
from selftrain.data import load_train_prompts  # noqa: E402
from selftrain.generation import Request, SamplingParams, request_seed  # noqa: E402
from selftrain.generation.local import LocalBackend  # noqa: E402
from selftrain.models import load_model, load_tokenizer  # noqa: E402
from selftrain.prompts import PromptSpec, build_messages, render_prompt  # noqa: E402


def requests_for(records, tokenizer, spec, samples: int, params: SamplingParams) -> list[Request]:
    out = []
    for r in records:
        text, messages = render_prompt(tokenizer, r, spec), tuple(build_messages(r, spec))
        out += [Request(f"{r['id']}#{j}", text, messages, params, request_seed(0, f"{r['id']}#{j}"))
                for j in range(samples)]
    return out


def open_backend(name: str, args, model, tokenizer, spec):
    if name in ("selftrain", "hf"):
        return LocalBackend(args.model, spec, engine=name, batch_size=args.batch_size, progress=False,
                            model=model, tokenizer=tokenizer)
    if name == "llama_cpp":
        from selftrain.generation.server import LaunchedServerBackend

        gen = GenerationConfig(backend="openai", server="llama_cpp", max_concurrency=args.concurrency)
        return LaunchedServerBackend(gen, args.model, progress=False)
    raise SystemExit(f"unknown backend {name!r}: selftrain, hf or llama_cpp")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--samples", type=int, default=2, help="samples per prompt")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight to a server")
    p.add_argument("--max_new_tokens", type=int, default=96)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--k", type=int, default=0, help="few-shot examples (a longer shared prefix)")
    p.add_argument("--backends", default="selftrain,hf,llama_cpp")
    p.add_argument("--greedy", type=int, default=32, help="prompts for the greedy agreement check (0: none)")
    args = p.parse_args()

    config = load_config(None, {"k": args.k, "task.n_train": args.prompts})
    tokenizer, model = load_tokenizer(args.model), load_model(args.model)
    spec = PromptSpec.from_config(config)
    records = load_train_prompts(config, 1)[: args.prompts]
    params = SamplingParams(args.temperature, args.top_p, 0, args.max_new_tokens)
    sampled = requests_for(records, tokenizer, spec, args.samples, params)
    greedy = requests_for(records[: args.greedy], tokenizer, spec, 1, SamplingParams(0.0, 1.0, 0, args.max_new_tokens))
    print(f"model {args.model} ({model.dtype}, {torch.get_num_threads()} threads), {len(sampled)} requests, "
          f"batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, temperature {args.temperature}, "
          f"top_p {args.top_p}, k {args.k}")
    results, replies = {}, {}
    for name in args.backends.split(","):
        started = time.perf_counter()
        with open_backend(name, args, model, tokenizer, spec) as backend:
            startup = time.perf_counter() - started
            before = backend.stats.completion_tokens
            started = time.perf_counter()
            completions = list(backend.generate(sampled))
            seconds = time.perf_counter() - started
            tokens = backend.stats.completion_tokens - before
            replies[name] = {c.key: c.text for c in backend.generate(greedy)} if greedy else {}
        stopped = sum(c.finish_reason == "stop" for c in completions)
        results[name] = tokens / seconds
        print(f"{name:>10}: {tokens:6d} tokens in {seconds:6.1f} s = {tokens / seconds:6.1f} tokens/s "
              f"(mean reply {tokens / len(completions):.1f} tokens, {stopped}/{len(completions)} stopped; "
              f"start-up {startup:.1f} s)")
    base = results.get("hf")
    if base:
        print("ratio to model.generate: " + ", ".join(f"{n} {v / base:.2f}x" for n, v in results.items()))
    if greedy and "selftrain" in replies:
        ref = replies["selftrain"]
        for name, got in replies.items():
            same = sum(got[k] == ref[k] for k in ref)
            print(f"greedy replies identical to the selftrain engine's: {name} {same}/{len(ref)}")


if __name__ == "__main__":
    main()
