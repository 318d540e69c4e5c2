"""distill_eval.py: held-out accuracy of a distillation model, greedy, on the prompt it was trained on.

Variants (each its own stage and results file; one model load for all of them):
  a          Track A's prompt: the question alone (the training prompt of the base model and Track A)
  b          Track B's prompt: the question and the student's own draft of it (Track B's and Phase C's)
  no_draft   ablation: Track B's prompt without the draft
  shuffled   ablation: Track B's prompt with the draft of another test question (a seeded derangement)
Every model is evaluated on every variant (mk/distill.mk), so whether the reasoning helps reads from one
table: the first variant given is the iteration's main one (its `eval` stage: the prompt the model was
trained on), the others are `eval_<variant>`. The drafts are the base student's, written by drafts.py
for the test split exactly like the training drafts. Reported per variant: accuracy overall and per
true class, the predicted-class shares (a model that says "No" to everything shows as no 100%) and
replies with no clear yes/no.

  python distill_eval.py --run_dir results/distill --iteration 2 --variants b,no_draft,shuffled,a
"""
from __future__ import annotations

import json

from selftrain.cli import base_parser, resolve_config, run
from selftrain.config import Config
from selftrain.distill import expected, shuffled, track_a_record, track_b_record
from selftrain.errors import InputError
from selftrain.logging import log
from selftrain.models import resolve_model
from selftrain.prompts import PromptSpec
from selftrain.records import read_jsonl
from selftrain.report import track_round
from selftrain.runs import finished_output, model_dir, open_stage

VARIANTS = ("a", "b", "no_draft", "shuffled")


def stage_name(variant: str, main: str) -> str:
    """The iteration's main variant is its `eval` stage (what every report reads); ablations are eval_<name>."""
    return "eval" if variant == main else f"eval_{variant}"


def variant_records(variant: str, tests: list[dict], seed: int) -> list[dict]:
    if variant == "a":
        return [track_a_record(t) for t in tests]
    if variant == "b":
        return [track_b_record(t, t["response"]) for t in tests]
    if variant == "no_draft":
        return [track_b_record(t, None) for t in tests]
    other = shuffled([t["id"] for t in tests], seed)
    by_id = {t["id"]: t for t in tests}
    return [track_b_record(t, by_id[other[t["id"]]]["response"]) for t in tests]


def evaluate_variants(config: Config, model_name: str, tests: list[dict], stages: dict) -> dict:
    """Evaluate `model_name` on each variant of `stages` ({variant: Stage}); the summaries."""
    from selftrain.generation.jobs import open_backend
    from selftrain.stages.evaluate import evaluate_with

    spec = PromptSpec.from_config(config)
    backend, tokenizer = open_backend(config, model_name, spec, batch_size=config.eval_batch_size, role="eval")
    results = {}
    with backend:
        for variant, stage in stages.items():
            records = variant_records(variant, tests, config.seed)
            summary, outputs = evaluate_with(backend, tokenizer, config, records, spec)
            # per true class and the predicted shares: the yesno reward's summary (accuracy_yes, predicted_no, ...)
            summary.update(unclear=sum(o.get("predicted") is None for o in outputs), variant=variant, model=model_name)
            log(f"{variant}: accuracy {summary['accuracy']} (yes {summary['accuracy_yes']}, no {summary['accuracy_no']}) "
                f"predicted yes {summary['predicted_yes']} no {summary['predicted_no']}, unclear {summary['unclear']}")
            stage.path.parent.mkdir(parents=True, exist_ok=True)
            stage.path.write_text(json.dumps({**summary, "results": outputs}, indent=1) + "\n")
            stage.finish(config, summary, {"model": model_name})
            results[variant] = summary
    return results


def model_and_tests(config: Config, args, script: str) -> tuple[str, list[dict]]:
    """What a stage on the test questions of iteration N works with: the model (`--model`, else iteration
    N's checkpoint, the base model for N = 0; checked to exist) and the base student's drafts of the
    test questions (iteration 0's, each with a yes/no truth)."""
    if not args.run_dir:
        raise InputError(f"{script}: give --run_dir (the test drafts are iteration 0's)")
    model_name = args.model or (config.base_model_path if args.iteration == 0 else str(model_dir(args.run_dir, args.iteration)))
    resolve_model(model_name)
    tests = [d for d in read_jsonl(finished_output(args.run_dir, 0, "drafts")) if d.get("split") == "test"]
    if not tests:
        raise InputError(f"{script}: the drafts hold no test-split question")
    for t in tests:
        expected(t)
    return model_name, tests


def main(argv=None):
    p = base_parser(__doc__)
    p.add_argument("--variants", default="a", help=f"comma-separated, the first is the iteration's main one "
                                                    f"(its `eval` stage): {', '.join(VARIANTS)}")
    p.add_argument("--model", help="checkpoint (default: iteration N's model; the base model for N=0)")
    args = p.parse_args(argv)
    config = resolve_config(args, {})
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            raise InputError(f"--variants: {v!r} is not one of {', '.join(VARIANTS)}")
    model_name, tests = model_and_tests(config, args, "distill_eval.py")
    stages = {}
    for v in variants:
        stage = open_stage(args, stage_name(v, variants[0]), suffix=".json")
        if not stage.done():
            stages[v] = stage
    if stages:
        evaluate_variants(config, model_name, tests, stages)
        track_round(config, args.run_dir, args.iteration)  # the iteration's last stage: round metrics to the trackers


if __name__ == "__main__":
    run(main)
