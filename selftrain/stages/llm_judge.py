"""llm_judge.py: the model judges candidate replies with the additive 5-point rubric (LLM-as-a-judge).

Each candidate of the samples file is judged `self_rewarding.judge_samples` times (paper: 3, sampled at
T 0.7, top-p 0.9) by the judge model: in a run, M_{t-1}, the model that wrote the candidates of
iteration t. Output records (appended one by one, resumable after any kill):
    id "<candidate id>@<k>", candidate_id, prompt_id, judge_idx, iteration, judge, prompt_text (the
    rendered rubric prompt), response (the judgement), finish_reason, num_tokens.
Scores are parsed later (pairs.py, judge_eval.py) from the text, so the parser's rules apply to every
judgement on disk; the marker counts them: parsed, "no score" (a judgement cut off at
judge_max_new_tokens is one: it never concluded), "out of range".

  python llm_judge.py --input data/iter2.samples.jsonl --judge_model results/sr/iter_01/model
  python llm_judge.py --run_dir results/self_rewarding --iteration 2
"""
from __future__ import annotations

from collections import Counter

from selftrain.config import Config
from selftrain.generation.jobs import open_backend, run_jobs_in_order, stage_seed
from selftrain.judging import aggregate
from selftrain.logging import log
from selftrain.prompts import PromptSpec
from selftrain.records import read_jsonl
from selftrain.self_rewarding import judge_jobs, judge_params, judgement_score

JUDGE_SEED = 7_919  # judge draws differ from the candidates' draws of the same iteration


def parse_counts(judgements: list[dict]) -> dict:
    """How many judgements gave a score, none, or one outside 0..5 (judging.aggregate counts them); and the
    scores given."""
    parsed = [judgement_score(j) for j in judgements]
    counts = aggregate(parsed)
    given = Counter(str(p.score) for p in parsed if p.score is not None)
    return {"judgements": counts["n_judgements"], "parsed": counts["n_ok"], "no_score": counts["n_no_score"],
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
    jobs = judge_jobs(config, tokenizer, candidates, judge_model, iteration)
    log(f"judging {len(candidates)} candidates x {config.self_rewarding.judge_samples} with {judge_model} "
        f"-> {output_path}")
    metrics = run_jobs_in_order(backend, jobs, output_path, judge_params(config), stage_seed(config, iteration) + JUDGE_SEED)
    counts = parse_counts(read_jsonl(output_path))
    log(f"judgements: {counts}")
    return {**metrics, **counts, "candidates": len(candidates)}


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
