"""judge_eval.py: how well a model judges, against the rule-checked truth (the paper's Table 4, offline).

The judge set: M0's candidates (num_generations_per_prompt each, sampled as in the loop) for the
held-out judge-eval prompts of the ifeval task, written once (`--candidates`, iteration 0 of a run:
stage `judge_set`). Every model M_N then judges the same set with the loop's own judge settings
(stage `judge_eval` of iteration N; `self_rewarding.judge_eval_samples` judgements per candidate, sampled
as in the loop), and the marker gives (`judge`, from judging.judge_agreement): over pairs of candidates
of one prompt whose true scores differ, pairwise accuracy on the decided pairs (the judge's two scores
differ; a judge tie is neither right nor wrong), the judge tie rate and accuracy with ties as half
right; exact-score agreement, Spearman and Kendall correlations, and the parse-failure rate
(unparsed judgements are left out of the pairs and the correlations, never scored 0); each figure but
Kendall's with its chance level (`chance`: the same judge's scores shuffled within each prompt, so a
judge that ignores the reply reads as its chance, not as 50% or 0); plus the judge's score histogram,
and (`judge.finished`) the pairwise figures over the replies that were not cut off, where a round's
pairs need the judge (a cut-off reply is never chosen).

  python judge_eval.py --run_dir results/self_rewarding --iteration 0 --candidates
  python judge_eval.py --run_dir results/self_rewarding --iteration 2
  python judge_eval.py --input data/judge_set.jsonl --judge_model results/sr/iter_02/model --output data/j2.jsonl
"""
from __future__ import annotations

import dataclasses

from selftrain.config import Config
from selftrain.errors import InputError
from selftrain.judging import judge_agreement, score_histogram
from selftrain.logging import log
from selftrain.records import read_jsonl
from selftrain.rewards import get_reward
from selftrain.runs import finished_output, model_dir
from selftrain.self_rewarding import judgements_per_candidate, scored_groups
from selftrain.stages.llm_judge import judge_candidates, read_candidates


def write_judge_set(config: Config, model_name: str, output_path) -> dict:
    """M0's candidates for the judge-eval prompts (resumable, like every generation stage)."""
    from selftrain.data import load_task_split
    from selftrain.generation.jobs import open_backend
    from selftrain.prompts import PromptSpec
    from selftrain.stages.generate import generate_samples

    prompts = load_task_split(config, "judge_eval")
    if not prompts:
        raise InputError("config: self_rewarding.judge_eval_prompts is 0: there is no judge set to write")
    backend, tokenizer = open_backend(config, model_name, PromptSpec.from_config(config),
                                      batch_size=config.batch_size, role="sample")
    with backend:
        return generate_samples(config, model_name, prompts, output_path, 0, backend, tokenizer)


def judge_accuracy(config: Config, candidates: list[dict], judgements: list[dict], where: str) -> dict:
    """The judge's agreement with the truth on `candidates` (scored here by the rule checks)."""
    truth = [dict(c, **r) for c, r in zip(candidates, get_reward(config).score(candidates))]
    groups = scored_groups(truth, judgements, judgements_per_candidate(config.self_rewarding), where)
    flat = [c for cs in groups.values() for c in cs]
    return {**judge_agreement(groups), "score_histogram": score_histogram([c["mean_score"] for c in flat]),
            "true_score_histogram": score_histogram([c["true_score"] for c in flat])}


def main(argv=None):
    from selftrain.cli import base_parser, resolve_config
    from selftrain.runs import open_stage

    p = base_parser(__doc__)
    p.add_argument("--candidates", action="store_true", help="write the judge set (M0's candidates) instead")
    p.add_argument("--input", help="the judge set JSONL (default in a run: iteration 0's judge_set)")
    p.add_argument("--output", help="judgements JSONL (or the judge set with --candidates)")
    p.add_argument("--judge_model", help="the judge (default: iteration N's model; the base model for N=0)")
    args = p.parse_args(argv)
    config = resolve_config(args, {})
    if args.candidates:
        stage = open_stage(args, "judge_set")
        if not stage.done():
            stage.finish(config, write_judge_set(config, config.base_model_path, stage.path),
                         {"model": config.base_model_path})
        return
    judge_set = args.input or (finished_output(args.run_dir, 0, "judge_set") if args.run_dir else None)
    if judge_set is None:
        raise InputError("judge_eval: give --input (a judge set) or --run_dir")
    stage = open_stage(args, "judge_eval")
    if stage.done():
        return
    judge = args.judge_model or (config.base_model_path if args.iteration == 0
                                 else str(model_dir(args.run_dir, args.iteration)))
    candidates = read_candidates(judge_set, getattr(get_reward(config), "check_record", None))
    sr = config.self_rewarding
    judging = dataclasses.replace(config, self_rewarding=dataclasses.replace(sr, judge_samples=sr.judge_eval_samples))
    metrics = judge_candidates(judging, judge, candidates, stage.path, args.iteration)
    accuracy = judge_accuracy(judging, candidates, read_jsonl(stage.path), str(stage.path))
    chance = accuracy["chance"]
    log(f"judge {judge}: accuracy on {accuracy['n_decided']} decided pairs {accuracy['pairwise_accuracy']} (chance "
        f"{chance['pairwise_accuracy']}), ties {accuracy['judge_tie_rate']} (chance {chance['judge_tie_rate']}), exact "
        f"{accuracy['exact_agreement']} (chance {chance['exact_agreement']}), Spearman {accuracy['spearman']} "
        f"(chance {chance['spearman']}), parse failures {metrics['parse_failure_rate']}; over finished replies "
        f"only: {accuracy['finished']['pairwise_accuracy']} on {accuracy['finished']['n_decided']} decided pairs "
        f"(chance {accuracy['finished']['chance']['pairwise_accuracy']})")
    stage.finish(config, {**metrics, "judge": accuracy}, {"judge_model": judge, "judge_set": str(judge_set)})
