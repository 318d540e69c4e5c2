"""Judging benchmark: seconds per judged candidate, each judging path on the same candidates, in one run.

The candidates are the model's own replies (sampled as the Self-Rewarding demo samples them, not
timed) to held-out prompts of the ifeval task; every path judges all of them with one loaded model,
one after the other in one process, on this machine's CPU kind (printed):

    sampled         `judge_samples` sampled judgements per candidate, each up to `judge_max_new_tokens`
                    tokens, the score parsed from the text: the demo's judging before expected scoring
                    (3 x 96 tokens, configs/judge_checks.txt): the baseline of every ratio
    expected        expected-score judging, the score first (judge_justification after/none): one forward
                    pass per candidate, the rubric prefix's KV cache computed once (prefill.py)
    expected_first  expected-score judging after a greedy justification (judge_justification first)

For `expected` it also checks what a resumed stage relies on: the candidates judged in another order
and split (every other one, then the rest, as a rerun after a kill) give scores identical to the
unbroken pass, bit for bit.

    .venv/bin/python bench/bench_judging.py [--model smollm2-135m] [--prompts 16] [--samples 4]
        [--judge_samples 3] [--judge_max_new_tokens 96] [--paths sampled,expected,expected_first]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from options import pick  # noqa: E402  (bench/options.py)

from selftrain.config import load_config  # noqa: E402
from selftrain.data import load_task_split  # noqa: E402
from selftrain.generation.jobs import open_backend  # noqa: E402
from selftrain.models import cpu_kind  # noqa: E402
from selftrain.prompts import PromptSpec  # noqa: E402
from selftrain.records import read_jsonl  # noqa: E402
from selftrain.stages.generate import generate_samples  # noqa: E402
from selftrain.stages.llm_judge import judge_candidates  # noqa: E402

PATHS = ("sampled", "expected", "expected_first")
REPO = Path(__file__).resolve().parents[1]


def path_config(config, path: str, args):
    sr = config.self_rewarding
    if path == "sampled":
        sr = dataclasses.replace(sr, judge_scoring="sampled", judge_justification="first",
                                 judge_template=str(REPO / "configs/judge_checks.txt"),
                                 judge_samples=args.judge_samples, judge_max_new_tokens=args.judge_max_new_tokens)
    elif path == "expected":
        sr = dataclasses.replace(sr, judge_scoring="expected", judge_justification="after",
                                 judge_template=str(REPO / "configs/judge_score_first.txt"))
    else:
        sr = dataclasses.replace(sr, judge_scoring="expected", judge_justification="first",
                                 judge_template=str(REPO / "configs/judge_checks.txt"),
                                 judge_max_new_tokens=args.judge_max_new_tokens)
    return dataclasses.replace(config, self_rewarding=sr)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs/self_rewarding.yaml"))
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--samples", type=int, default=4, help="candidates per prompt")
    p.add_argument("--judge_samples", type=int, default=3)
    p.add_argument("--judge_max_new_tokens", type=int, default=96)
    p.add_argument("--paths", default="sampled,expected")
    args = p.parse_args(argv)
    paths = pick(args.paths, PATHS, "path")
    config = load_config(args.config, {"base_model_path": args.model, "num_generations_per_prompt": args.samples})
    print(f"CPU kind: {cpu_kind()}; model {args.model}; {args.prompts} prompts x {args.samples} candidates")
    backend, tokenizer = open_backend(config, args.model, PromptSpec.from_config(config),
                                      batch_size=config.batch_size, role="sample", progress=False)
    with backend, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prompts = load_task_split(config, "judge_eval")[: args.prompts]
        generate_samples(config, args.model, prompts, tmp / "candidates.jsonl", 1, backend, tokenizer)
        candidates = read_jsonl(tmp / "candidates.jsonl")
        print(f"{backend.describe()}\n")
        rows, baseline = [], None
        for path in paths:
            started = time.perf_counter()
            judge_candidates(path_config(config, path, args), args.model, candidates, tmp / f"{path}.jsonl", 2,
                             backend, tokenizer)
            per = (time.perf_counter() - started) / len(candidates)
            baseline = baseline or per
            rows.append((path, per, baseline / per))
        print("| path | s per candidate | speed vs sampled |\n|---|---|---|")
        for path, per, ratio in rows:
            print(f"| {path} | {per:.3f} | {ratio:.2f}x |")
        if "expected" in paths:
            cfg, unbroken = path_config(config, "expected", args), tmp / "expected.jsonl"
            resumed = tmp / "resumed.jsonl"
            judge_candidates(cfg, args.model, candidates[::2], resumed, 2, backend, tokenizer)
            judge_candidates(cfg, args.model, candidates, resumed, 2, backend, tokenizer)

            def scores(f):
                return [(r["id"], r["expected_score"]) for r in read_jsonl(f)]

            same = scores(resumed) == scores(unbroken)
            print(f"\nexpected, judged in two parts (every other candidate, then the rest) vs unbroken: "
                  f"{'identical' if same else 'DIFFERENT'} scores for {len(candidates)} candidates")
            print(json.dumps({"first_scores": [round(s, 3) for _, s in scores(unbroken)[:8]]}))
            if not same:
                raise SystemExit(1)


if __name__ == "__main__":
    main()
