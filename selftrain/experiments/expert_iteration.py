"""Seed 002's Expert Iteration experiment: does filtering the samples help?

One set of judged samples, two models trained from the same base with the same
recipe, evaluated on the same held-out prompts:

  unfiltered  every sample (filter_strategy none)
  filtered    verified-correct samples only (filter_strategy correct)

Both arms drop exact duplicates and replies cut off at max_new_tokens, keep up
to num_generations_per_prompt replies per prompt (so the cap filters nothing)
and use no rationalizations: the only difference is the filter. Writes
seed 002's comparison table (experiment, data, correct %, validation accuracy)
to `<run>/expert_iteration/iter_NN/table.md`. Each arm's training set, model
and evaluation are files with completion markers, so a rerun resumes; markers
name the judged file they came from, and a folder made from another file is
refused rather than reused.

    python -m selftrain.experiments.expert_iteration --config configs/demo.yaml \\
        --run_dir results/demo --iteration 3        # samples of iteration 3
    make expert-iteration EXIT_ITER=3
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

from selftrain.cli import base_parser, resolve_config, run
from selftrain.config import Config
from selftrain.errors import InputError
from selftrain.logging import log
from selftrain.prompts import PromptSpec
from selftrain.records import read_jsonl, write_jsonl_atomic
from selftrain.runs import StageOutput, finished_output, read_marker

ARMS = (("unfiltered", "none"), ("filtered", "correct"))


def arm_config(config: Config, filter_strategy: str, per_prompt: int) -> Config:
    """The run's recipe with only the filter changed; the per-prompt cap never binds."""
    return dataclasses.replace(config, filter_strategy=filter_strategy, balance_by="", max_per_prompt=per_prompt)


def _done(directory: Path, stage: str, path: Path) -> StageOutput:
    return StageOutput(path, directory / f"{stage}.done")


def run_arm(config: Config, name: str, judged: list[dict], source: Path, directory: Path,
            eval_records: list[dict]) -> dict:
    from selftrain.stages.evaluate import evaluate
    from selftrain.stages.select import select_examples
    from selftrain.stages.train import train

    directory.mkdir(parents=True, exist_ok=True)
    data = _done(directory, "train", directory / "train.jsonl")
    if data.is_done():
        made_from = json.loads(data.marker.read_text()).get("input")
        if made_from != str(source.resolve()):
            raise InputError(f"{directory}: made from {made_from}, not {source.resolve()}; "
                             f"use another --output_dir or delete it")
    else:
        kept, stats = select_examples(config, judged, [])
        kept_ids = {k["id"] for k in kept}
        correct = sum(bool(r["is_correct"]) for r in judged if r["id"] in kept_ids)
        stats.update(correct_examples=correct, correct_percent=round(100 * correct / max(len(kept), 1), 1))
        spec = PromptSpec.from_config(config).to_dict()
        write_jsonl_atomic(data.path, [dict(r, prompt_spec=spec) for r in kept])
        data.finish(config, stats, {"input": str(source.resolve())})
        log(f"{name}: {len(kept)} training examples, {stats['correct_percent']}% correct")
    model = _done(directory, "model", directory / "model")
    if not model.is_done():
        model.finish(config, train(config, data.path, model.path, config.base_model_path))
    result = _done(directory, "eval", directory / "eval.json")
    if not result.is_done():
        spec = PromptSpec.from_config(config)
        summary, outputs = evaluate(config, str(model.path), eval_records, spec)
        result.path.write_text(json.dumps({**summary, "results": outputs}, indent=1) + "\n")
        result.finish(config, summary)
    return {stage: json.loads((directory / f"{stage}.done").read_text())["metrics"]
            for stage in ("train", "model", "eval")}


def table(results: dict[str, dict], samples: int, source: str, base_accuracy: float | None) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    lines = [f"Judged samples: {samples} from {source}; both models trained from the same base model.", "",
             "| Experiment | Data | Correct % | Val Accuracy |", "|---|---|---|---|"]
    if base_accuracy is not None:
        lines.append(f"| Base model (no training) | - | - | {pct(base_accuracy)} |")
    labels = {"unfiltered": "all samples", "filtered": "correct samples"}
    for name, _ in ARMS:
        r = results[name]
        lines.append(f"| {name.capitalize()} | {labels[name]} ({r['train']['train_examples']}) | "
                     f"{r['train']['correct_percent']:.1f}% | {pct(r['eval']['accuracy'])} |")
    gain = results["filtered"]["eval"]["accuracy"] - results["unfiltered"]["eval"]["accuracy"]
    lines.append(f"| Improvement | - | - | {100 * gain:+.1f} points |")
    return "\n".join(lines) + "\n"


USAGE = __doc__


def main(argv=None):
    from selftrain.data import load_eval_prompts
    from selftrain.rewards import is_verifiable

    p = base_parser(USAGE)
    p.add_argument("--judged", help="judged samples JSONL (default: the run's iteration --iteration)")
    p.add_argument("--output_dir", help="default: <run_dir>/expert_iteration")
    args = p.parse_args(argv)
    config = resolve_config(args, {})
    if not is_verifiable(config):
        raise InputError("expert iteration compares correct-only with all samples: it needs a rule-based reward")
    if args.judged:
        source = Path(args.judged)
    elif args.run_dir:
        source = finished_output(args.run_dir, args.iteration, "judged")
    else:
        raise InputError("give --judged FILE, or --run_dir (and --iteration) of a run with judged samples")
    if not args.output_dir and not args.run_dir:
        raise InputError("give --output_dir (or --run_dir)")
    out_dir = Path(args.output_dir or Path(args.run_dir) / "expert_iteration" / f"iter_{args.iteration:02d}")
    judged = read_jsonl(source)
    for i, r in enumerate(judged, 1):
        if "is_correct" not in r or "prompt_text" not in r or "prompt_id" not in r:
            raise InputError(f"{source}:{i}: is_correct/prompt_text/prompt_id: missing (is this a judged samples file?)")
    eval_records = load_eval_prompts(config, "test")
    per_prompt = max(Counter(r["prompt_id"] for r in judged).values())
    results = {name: run_arm(arm_config(config, strategy, per_prompt), name, judged, source, out_dir / name,
                             eval_records) for name, strategy in ARMS}
    base = read_marker(args.run_dir, 0, "eval") if args.run_dir else None
    text = table(results, len(judged), str(source), base["metrics"]["accuracy"] if base else None)
    (out_dir / "table.md").write_text(text)
    print(text)
    log(f"written: {out_dir / 'table.md'}")


if __name__ == "__main__":
    run(main)
