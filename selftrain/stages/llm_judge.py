"""llm_judge.py: the model judges candidate replies with the additive 5-point rubric (LLM-as-a-judge).

Each candidate of the samples file is judged `self_rewarding.judge_samples` times (paper: 3, sampled at
T 0.7, top-p 0.9) by the judge model: in a run, M_{t-1}, the model that wrote the candidates of
iteration t. Output records (appended one by one, resumable after any kill):
    id "<candidate id>@<k>", candidate_id, prompt_id, judge_idx, iteration, judge, prompt_text (the
    rendered rubric prompt), response (the judgement), finish_reason, num_tokens.
Scores are parsed later (pairs.py, judge_eval.py) from the text, so the parser's rules apply to every
judgement on disk; the marker counts them: parsed, "no score" (a judgement cut off at
judge_max_new_tokens is one: it never concluded), "out of range".

`self_rewarding.judge_scoring: expected` (G-Eval) judges each candidate once, without sampling: the
score is the probability-weighted mean of the score tokens 0..5 where the judge writes its score, read
from the judge's next-token distribution after "Score: " (local backends: the logits, the rubric's
prefix computed once per stage; a server: its top logprobs). The record's `response` is the judge's
reply up to there, and it adds `score_logprobs` (the six), `expected_score` and `score_mass` (their
probability together: how sure the judge is that a score comes next).

  python llm_judge.py --input data/iter2.samples.jsonl --judge_model results/sr/iter_01/model
  python llm_judge.py --run_dir results/self_rewarding --iteration 2
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from selftrain.config import Config
from selftrain.generation.base import SamplingParams, ScoreRequest, described
from selftrain.generation.jobs import open_backend, run_jobs_in_order, stage_seed
from selftrain.judging import aggregate, load_template, round_half_up
from selftrain.logging import log
from selftrain.prompts import PromptSpec, render_prompt
from selftrain.records import JsonlAppender, read_jsonl, reorder_jsonl
from selftrain.self_rewarding import (expected_score, judge_jobs, judge_params, judge_prompt_record, judgement_score,
                                      opening_after, score_opening)

JUDGE_SEED = 7_919  # judge draws differ from the candidates' draws of the same iteration


def parse_counts(judgements: list[dict]) -> dict:
    """How many judgements gave a score, none, or one outside 0..5 (judging.aggregate counts them); and the
    scores given."""
    parsed = [judgement_score(j) for j in judgements]
    counts = aggregate(parsed)
    given = Counter(str(round_half_up(p.score)) for p in parsed if p.score is not None)
    return {"judgements": counts["n_judgements"], "parsed": counts["n_ok"], "no_score": counts["n_no_score"],
            **({"mean_score_mass": round(sum(j["score_mass"] for j in judgements) / len(judgements), 4)}
               if judgements and "score_mass" in judgements[0] else {}),
            "out_of_range": counts["n_out_of_range"],
            "parse_failure_rate": round(1 - counts["n_ok"] / max(len(judgements), 1), 4),
            "scores_given": dict(sorted(given.items())),
            "judge_truncated": sum(j.get("finish_reason") == "length" for j in judgements)}


def judge_candidates(config: Config, judge_model: str, candidates: list[dict], output_path, iteration: int,
                     backend=None, tokenizer=None) -> dict:
    """Judge every candidate into `output_path` (resumable); the stage metrics."""
    if backend is None:
        backend, tokenizer = open_backend(config, judge_model, PromptSpec.from_config(config),
                                          batch_size=config.batch_size, role="sample")
        with backend:
            return judge_candidates(config, judge_model, candidates, output_path, iteration, backend, tokenizer)
    sr = config.self_rewarding
    jobs = judge_jobs(config, tokenizer, candidates, judge_model, iteration)
    seed = stage_seed(config, iteration) + JUDGE_SEED
    if sr.judge_scoring == "expected":
        log(f"judging {len(candidates)} candidates (expected score, justification {sr.judge_justification}) "
            f"with {judge_model} -> {output_path}")
        metrics = expected_judgements(config, backend, tokenizer, jobs, output_path, seed)
    else:
        log(f"judging {len(candidates)} candidates x {sr.judge_samples} with {judge_model} -> {output_path}")
        metrics = run_jobs_in_order(backend, jobs, output_path, judge_params(config), seed)
    counts = parse_counts(read_jsonl(output_path))
    log(f"judgements: {counts}")
    return {**metrics, **counts, "candidates": len(candidates)}


def judge_prefix(config: Config, tokenizer) -> str:
    """The text every judge prompt of a stage begins with (system prompt, rubric up to the request): the
    prefix whose KV cache an expected-score backend computes once."""
    marker = "\x00"
    record = judge_prompt_record(load_template(config.self_rewarding.judge_template), {"prompt": marker,
                                                                                      "response": marker})
    return render_prompt(tokenizer, record, PromptSpec.from_config(config)).split(marker)[0]


def justifications_path(output_path) -> Path:
    """Where a judge that writes its checks first keeps them (resumable) before its score is read."""
    output_path = Path(output_path)
    return output_path.with_name("justifications_" + output_path.name)


def expected_judgements(config: Config, backend, tokenizer, jobs: list[dict], output_path, seed: int) -> dict:
    """One judgement per candidate whose score is the expected value of the score tokens after "Score:"
    (self_rewarding.expected_score). The judge's reply up to there is "Score: " alone (judge_justification
    after / none) or its greedy justification (first), generated and kept on disk before any score is read.
    Each record keeps the six score log-probabilities and the mass they hold; appended as it comes, so a
    killed stage resumes, and each score depends on its own prompt alone (prefill.py), never on the split."""
    sr = config.self_rewarding
    label, options = score_opening(tokenizer)
    openings = {job["id"]: (label, "stop", 0) for job in jobs}
    metrics = {}
    if sr.judge_justification == "first":
        texts = justifications_path(output_path)
        greedy = SamplingParams(0.0, 1.0, 0, sr.judge_max_new_tokens)
        metrics["justifications"] = run_jobs_in_order(backend, [dict(job) for job in jobs], texts, greedy, seed)
        for r in read_jsonl(texts):
            openings[r["id"]] = (opening_after(r["response"], label), r["finish_reason"], r["num_tokens"])
    prefix = judge_prefix(config, tokenizer)
    before = dataclasses.replace(backend.stats)
    # a new output file is created by the first score: a backend that cannot score leaves nothing behind
    appender = JsonlAppender(output_path) if Path(output_path).exists() else None
    done = appender.done if appender else set()
    todo = {job["id"]: job for job in jobs if job["id"] not in done}
    if done:
        log(f"resuming: {len(jobs) - len(todo)} of {len(jobs)} already judged, {len(todo)} to go")
    requests = [ScoreRequest(key, job["prompt_text"] + openings[key][0], options, prefix) for key, job in todo.items()]
    try:
        for result in backend.score_options(requests):
            job = todo.pop(result.key)
            opening, finish_reason, num_tokens = openings[result.key]
            value, mass = expected_score(list(result.logprobs))
            appender = appender or JsonlAppender(output_path)
            appender.write({**{k: v for k, v in job.items() if not k.startswith("_")}, "response": opening,
                            "finish_reason": finish_reason, "num_tokens": num_tokens,
                            "score_logprobs": list(result.logprobs), "expected_score": value,
                            "score_mass": round(mass, 6)})
    finally:
        if appender:
            appender.close()
    if todo:
        raise RuntimeError(f"backend {backend.name} returned no score for {len(todo)} requests")
    reorder_jsonl(output_path, [job["id"] for job in jobs])
    spent = backend.stats.since(before).as_dict()
    return {**metrics, "scored": spent["completions"], "skipped_existing": len(jobs) - spent["completions"],
            "seconds": spent["seconds"], "prompt_tokens": spent["prompt_tokens"],
            "seconds_per_candidate": round(spent["seconds"] / max(spent["completions"], 1), 4),
            "backend": described(backend)}


def main(argv=None):
    from selftrain.cli import base_parser, resolve_config
    from selftrain.runs import generator_for, open_stage

    p = base_parser(__doc__)
    p.add_argument("--input", help="candidates JSONL (default in a run: the iteration's samples)")
    p.add_argument("--output", help="judgements JSONL (default by hand: beside --input, .judgements.jsonl)")
    p.add_argument("--judge_model", help="the judge (default: the model that wrote iteration N's candidates)")
    args = p.parse_args(argv)
    config = resolve_config(args, {})
    stage = open_stage(args, "judgements", inputs=("samples",))
    if stage.done():
        return
    candidates = read_candidates(stage.inputs["samples"])
    judge = args.judge_model or generator_for(config, args.run_dir, args.iteration)
    metrics = judge_candidates(config, judge, candidates, stage.path, args.iteration)
    stage.finish(config, metrics, {"judge_model": judge})


def read_candidates(path, check=None) -> list[dict]:
    """The replies to judge, each checked before anything is sent (`check(record) -> problem or None`:
    also what a reward needs of it)."""
    from selftrain.errors import InputError
    from selftrain.records import iter_jsonl

    candidates = []
    for lineno, c in iter_jsonl(path):
        for key in ("id", "response"):
            if not isinstance(c.get(key), str):
                raise InputError(f"{path}:{lineno}: {key}: missing (is this a generation output file?)")
        if not isinstance(c.get("prompt"), str) and not c.get("messages"):
            raise InputError(f"{path}:{lineno}: prompt: missing (the judge needs the question)")
        if check is not None and (problem := check(c)) is not None:
            raise InputError(f"{path}:{lineno}: {problem}")
        candidates.append(c)
    if not candidates:
        raise InputError(f"{path}: file is empty (no candidates)")
    return candidates
