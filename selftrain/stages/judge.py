"""Score every sample with the configured reward.

Adds the reward's fields (`reward_score`, `is_correct`, `answer_found`, and
type-specific ones such as `predicted`) to each record.
Metrics count "no answer found" apart from "wrong answer": a parser that finds
nothing must never look like a model that is wrong.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from selftrain.config import Config
from selftrain.errors import InputError
from selftrain.logging import log
from selftrain.metrics import grouped, response_signals, reward_stats
from selftrain.records import JsonlAppender, iter_jsonl, read_jsonl
from selftrain.rewards import get_reward, reward_class

CHUNK = 256  # records scored and flushed together (bounds lost work on a crash)


def read_samples(config: Config, input_path) -> list[dict]:
    """Every sample of a generation output, checked before anything is scored or written.

    Besides the fields every sample has, the reward's own `check_record` (if it
    has one) names what it could not score, at the file and line."""
    check = getattr(reward_class(config), "check_record", None)
    samples = []
    for lineno, sample in iter_jsonl(input_path):
        for key in ("id", "prompt_id", "response"):
            if not isinstance(sample.get(key), str):
                raise InputError(f"{input_path}:{lineno}: {key}: missing (is this a generation output file?)")
        if check is not None and (problem := check(sample)) is not None:
            raise InputError(f"{input_path}:{lineno}: {problem}")
        samples.append(sample)
    if not samples:
        raise InputError(f"{input_path}: file is empty (no records)")
    return samples


def judge_file(config: Config, input_path, output_path, *, aside: bool = False) -> dict:
    """Score `input_path` into `output_path` (appending, resumable by id); the round's metrics.

    A failure never leaves an empty output file. `aside` (by hand, where no marker
    tells a finished file from a half one): the records go to `<output>.partial`,
    renamed to `output_path` once complete; a rerun resumes from the partial file."""
    samples = read_samples(config, input_path)
    reward = get_reward(config)
    output_path = Path(output_path)
    work = output_path.with_name(output_path.name + ".partial") if aside else output_path
    if aside and output_path.exists() and not work.exists():
        os.replace(output_path, work)  # an earlier file: resume from what it holds
    try:
        with JsonlAppender(work) as appender:
            todo = [s for s in samples if s["id"] not in appender.done]
            for begin in range(0, len(todo), CHUNK):
                chunk = todo[begin:begin + CHUNK]
                results = reward.score(chunk)
                if len(results) != len(chunk):  # a reward bug must never drop or shift records silently
                    raise RuntimeError(f"reward {reward.name} returned {len(results)} results for {len(chunk)} records")
                for sample, result in zip(chunk, results):
                    appender.write({**sample, **result})
    except BaseException:  # errors and Ctrl-C: keep what was scored (a rerun resumes), never an empty file
        if work.is_file() and work.stat().st_size == 0:
            work.unlink()
        raise
    if aside:
        os.replace(work, output_path)
    judged = read_jsonl(output_path)
    metrics = judge_metrics(judged)
    correctness = (f"; {metrics['correct']}/{metrics['samples']} correct, {metrics['no_answer']} without an answer, "
                   f"{metrics['solved_prompts']}/{metrics['prompts']} prompts solved") if "solve_rate" in metrics else ""
    log(f"judge: {metrics['samples']} samples, mean reward {metrics['mean_reward']} "
        f"(median {metrics['median_reward']}){correctness}")
    return metrics


def judge_metrics(judged: list[dict]) -> dict:
    """Correctness counts (verifiable rewards), reward statistics and hacking signals of one round."""
    by_prompt = defaultdict(list)
    for r in judged:
        by_prompt[r["prompt_id"]].append(r)
    correct = sum(bool(r.get("is_correct")) for r in judged)
    no_answer = sum(not r.get("answer_found", True) for r in judged)
    solved = sum(any(r.get("is_correct") for r in rs) for rs in by_prompt.values())
    verifiable = all(r.get("is_correct") is not None for r in judged)
    if not verifiable:  # scores without correctness (local, api, script rewards)
        correct = solved = None
    return {
        "samples": len(judged), "correct": correct, "no_answer": no_answer, "prompts": len(by_prompt),
        **({"wrong": len(judged) - correct - no_answer, "sample_accuracy": round(correct / max(len(judged), 1), 4),
            "solved_prompts": solved, "solve_rate": round(solved / max(len(by_prompt), 1), 4)} if verifiable else {}),
        **{k: v for k, v in reward_stats(judged).items() if k != "n"},
        "truncated": sum(r.get("finish_reason") == "length" for r in judged),
        **response_signals(judged),
        **grouped(judged),
    }


USAGE = """judge.py: score generated samples with the configured reward (rule-based math by default).

  python judge.py --input data/star_iter1_train.samples.jsonl --output data/star_iter1_train.judged.jsonl
  python judge.py --run_dir results/demo --iteration 1
"""


def main(argv=None):
    from selftrain.cli import base_parser, resolve_config
    from selftrain.runs import open_stage

    p = base_parser(USAGE)
    p.add_argument("--input", help="samples JSONL (default in a run: the iteration's samples)")
    p.add_argument("--output", help="judged JSONL (default by hand: beside --input, .judged.jsonl)")
    args = p.parse_args(argv)
    config = resolve_config(args, {})
    stage = open_stage(args, "judged", inputs=("samples",))
    if stage.done():
        return
    aside = stage.output.marker is None  # by hand: build the file aside, so a half one never looks finished
    stage.finish(config, judge_file(config, stage.inputs["samples"], stage.path, aside=aside))
