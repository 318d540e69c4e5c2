"""Score every sample with the configured reward.

Adds `predicted`, `is_correct`, `reward_score`, `answer_found` to each record.
Metrics count "no answer found" apart from "wrong answer": a parser that finds
nothing must never look like a model that is wrong.
"""
from __future__ import annotations

from collections import defaultdict
from selftrain.config import Config
from selftrain.errors import InputError
from selftrain.logging import log
from selftrain.records import JsonlAppender, iter_jsonl, read_jsonl
from selftrain.rewards import get_reward

CHUNK = 256  # records scored and flushed together (bounds lost work on a crash)


def judge_file(config: Config, input_path, output_path) -> dict:
    samples = []
    for lineno, sample in iter_jsonl(input_path):
        for key in ("id", "prompt_id", "response"):
            if not isinstance(sample.get(key), str):
                raise InputError(f"{input_path}:{lineno}: {key}: missing (is this a generation output file?)")
        samples.append(sample)
    if not samples:
        raise InputError(f"{input_path}: file is empty (no records)")
    reward = get_reward(config)
    with JsonlAppender(output_path) as appender:
        todo = [s for s in samples if s["id"] not in appender.done]
        for begin in range(0, len(todo), CHUNK):
            chunk = todo[begin:begin + CHUNK]
            for sample, result in zip(chunk, reward.score(chunk)):
                appender.write({**sample, **result})
    judged = read_jsonl(output_path)
    metrics = judge_metrics(judged)
    log(f"judge: {metrics['correct']}/{metrics['samples']} correct, {metrics['no_answer']} without an answer, "
        f"{metrics['solved_prompts']}/{metrics['prompts']} prompts solved")
    return metrics


def judge_metrics(judged: list[dict]) -> dict:
    by_prompt = defaultdict(list)
    for r in judged:
        by_prompt[r["prompt_id"]].append(r)
    correct = sum(bool(r.get("is_correct")) for r in judged)
    no_answer = sum(not r.get("answer_found", True) for r in judged)
    solved = sum(any(r.get("is_correct") for r in rs) for rs in by_prompt.values())
    scores = [float(r["reward_score"]) for r in judged]
    return {
        "samples": len(judged), "correct": correct, "wrong": len(judged) - correct - no_answer,
        "no_answer": no_answer, "sample_accuracy": round(correct / max(len(judged), 1), 4),
        "prompts": len(by_prompt), "solved_prompts": solved, "solve_rate": round(solved / max(len(by_prompt), 1), 4),
        "mean_reward": round(sum(scores) / max(len(scores), 1), 4),
        "truncated": sum(r.get("finish_reason") == "length" for r in judged),
        "mean_response_tokens": round(sum(r.get("num_tokens", 0) for r in judged) / max(len(judged), 1), 1),
    }


USAGE = """judge.py: score generated samples (rule-based math by default).

  python judge.py --input data/star_iter1_train.samples.jsonl --output data/star_iter1_train.judged.jsonl
  python judge.py --run_dir results/demo --iteration 1
"""


def main(argv=None):
    from selftrain.cli import base_parser, resolve_config, step_io

    p = base_parser(USAGE)
    p.add_argument("--input", help="samples JSONL (default in a run: the iteration's samples)")
    p.add_argument("--output", help="judged JSONL (default by hand: beside --input, .judged.jsonl)")
    args = p.parse_args(argv)
    config = resolve_config(args, {})
    source, out = step_io(args, "judge.py", "samples", "judged")
    if out.is_done():
        log(f"judge: {out.marker} exists; nothing to do")
        return
    out.finish(config, judge_file(config, source, out.path), {"input": str(source)})
