"""Generation benchmark: the project's engine next to plain `model.generate`.

Same model, same prompts (the stage-1 prompts of the demo task), same sampling
settings, measured in the same process one after the other. Prints generated
tokens per second of each and their ratio.

    .venv/bin/python bench/bench_generation.py [--model smollm2-135m] [--prompts 128]
        [--samples 2] [--batch_size 64] [--max_new_tokens 96] [--temperature 0.8] [--k 0]

"Tokens" are the real reply tokens (up to and excluding the stop token); the
padding `generate` computes after a row has finished is not counted for either.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from selftrain.config import load_config  # noqa: E402
from selftrain.data import load_train_prompts  # noqa: E402
from selftrain.generation import Engine, Request, SamplingParams  # noqa: E402
from selftrain.models import load_model, load_tokenizer  # noqa: E402
from selftrain.prompts import PromptSpec, encode_prompt, render_prompt  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompts", type=int, default=128)
    p.add_argument("--samples", type=int, default=2, help="samples per prompt")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_new_tokens", type=int, default=96)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--k", type=int, default=0, help="few-shot examples (a longer shared prefix)")
    p.add_argument("--engines", default="selftrain,hf")
    args = p.parse_args()

    config = load_config(None, {"k": args.k, "task.n_train": args.prompts})
    tokenizer, model = load_tokenizer(args.model), load_model(args.model)
    spec = PromptSpec.from_config(config)
    records = load_train_prompts(config, 1)[: args.prompts]
    requests = [Request(f"{r['id']}#{j}", encode_prompt(tokenizer, render_prompt(tokenizer, r, spec), spec))
                for r in records for j in range(args.samples)]
    params = SamplingParams(args.temperature, args.top_p, 0, args.max_new_tokens)
    print(f"model {args.model} ({model.dtype}, {torch.get_num_threads()} threads), {len(requests)} requests, "
          f"batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, temperature {args.temperature}, "
          f"top_p {args.top_p}, k {args.k}, prompt tokens ~{sum(len(r.prompt_ids) for r in requests) // len(requests)}")
    results = {}
    for name in args.engines.split(","):
        engine = Engine(model, tokenizer, params, batch_size=args.batch_size, seed=0, progress=False, engine=name)
        started = time.perf_counter()
        completions = list(engine.generate(requests))
        seconds = time.perf_counter() - started
        tokens = sum(len(c.token_ids) for c in completions)
        stopped = sum(c.finish_reason == "stop" for c in completions)
        results[name] = tokens / seconds
        print(f"{name:>10}: {tokens:6d} tokens in {seconds:6.1f} s = {tokens / seconds:6.1f} tokens/s "
              f"(mean reply {tokens / len(completions):.1f} tokens, {stopped}/{len(completions)} stopped)")
    if "selftrain" in results and "hf" in results:
        print(f"speed-up of the selftrain engine over model.generate: {results['selftrain'] / results['hf']:.2f}x")


if __name__ == "__main__":
    main()
