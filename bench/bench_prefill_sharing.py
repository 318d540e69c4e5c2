"""Repeated prompts prefilled once: the judging stage of Self-Rewarding, in one run.

A Self-Rewarding round judges every candidate J times (paper: 3) with the same rubric prompt, and
generation samples k replies per question: the engine prefills each distinct prompt of a group
once and copies its cache to the repeated rows (`engine._prefill`). This benchmark times the
engine on the judging workload both ways, on the same model, sampling settings and prompt
lengths, in one process:

    distinct   each of the J copies differs from the others in one token inside the reply
               (same length, so the same compute as prefilling every row): the baseline
    shared     the J copies are identical, as in the stage

Judge prompts: the demo's judge template (configs/judge_checks.txt) on the demo task's pool
prompts with the embedded model's own greedy replies (written first, untimed).

    .venv/bin/python bench/bench_prefill_sharing.py [--model smollm2-135m] [--candidates 96]
        [--judgements 3] [--max_new_tokens 96] [--batch_size 256]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selftrain.generation import SamplingParams, request_seed  # noqa: E402
from selftrain.generation.engine import Engine, TokenRequest, common_prefix_length  # noqa: E402
from selftrain.judging import load_template, render_judge_prompt  # noqa: E402
from selftrain.models import cpu_kind, load_model, load_tokenizer, resolve_model  # noqa: E402
from selftrain.tasks.instructions import generate_splits  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = "You are a helpful assistant. Follow every instruction in the user's request exactly."


def chat_ids(tokenizer, text: str) -> list[int]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def timed(model, tokenizer, params: SamplingParams, prompts: list[list[int]], batch_size: int) -> tuple[float, int]:
    engine = Engine(model, tokenizer, params, batch_size=batch_size, progress=False)
    requests = [TokenRequest(f"r{i}", ids, request_seed(0, f"r{i}")) for i, ids in enumerate(prompts)]
    start = time.perf_counter()
    tokens = sum(len(c.token_ids) for c in engine.generate(requests))
    return time.perf_counter() - start, tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--candidates", type=int, default=96)
    p.add_argument("--judgements", type=int, default=3)
    p.add_argument("--max_new_tokens", type=int, default=96)
    p.add_argument("--batch_size", type=int, default=256)
    args = p.parse_args()

    name = resolve_model(args.model)
    tokenizer, model = load_tokenizer(name), load_model(name, dtype="auto")
    print(f"cpu kind {cpu_kind()}, model {args.model} ({model.dtype})")
    questions = [r["prompt"] for r in generate_splits({"pool": args.candidates}, seed=0)["pool"]]
    greedy = SamplingParams(temperature=0, max_new_tokens=args.max_new_tokens)
    engine = Engine(model, tokenizer, greedy, batch_size=args.batch_size, progress=False)
    replies = {c.key: tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in engine.generate(
        [TokenRequest(f"q{i}", chat_ids(tokenizer, q), 0) for i, q in enumerate(questions)])}
    template = load_template(ROOT / "configs" / "judge_checks.txt")
    judged = [chat_ids(tokenizer, render_judge_prompt(template, q, replies[f"q{i}"])) for i, q in enumerate(questions)]
    shared = [ids for ids in judged for _ in range(args.judgements)]
    distinct = []
    for ids in judged:
        where = len(ids) - 12  # inside the reply, after the prefix every judge prompt shares
        for j in range(args.judgements):
            copy = list(ids)
            copy[where] = (copy[where] + j) % len(tokenizer)
            distinct.append(copy)
    assert common_prefix_length(distinct) == common_prefix_length(shared)
    prompt_tokens = sum(map(len, shared))
    print(f"{len(shared)} judgements of {len(judged)} replies, {prompt_tokens / len(shared):.0f} prompt tokens each")
    params = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=args.max_new_tokens)
    results = {}
    for label, prompts in (("distinct", distinct), ("shared", shared)):
        results[label] = timed(model, tokenizer, params, prompts, args.batch_size)
    base = results["distinct"][0]
    print(f"{'path':10} {'seconds':>8} {'reply tok':>9} {'ratio':>6}")
    for label, (seconds, tokens) in results.items():
        print(f"{label:10} {seconds:8.1f} {tokens:9d} {base / seconds:6.2f}x")


if __name__ == "__main__":
    main()
