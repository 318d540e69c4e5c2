"""evaluate.py: greedy accuracy (or mean reward) on held-out prompts, overall and per difficulty.

Iteration 0 evaluates the base model, so every run reports its own baseline.
The prompt format comes from (in order of precedence) the command line, the
config file, the one the checkpoint was trained with, then the defaults.

  python evaluate.py --iteration 1 --model results/model_star_iter1 --save_results
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from selftrain.cli import base_parser, resolve_config, run
from selftrain.config import load_config_file
from selftrain.data import load_eval_prompts
from selftrain.logging import log
from selftrain.metrics import grouped, response_signals, reward_stats
from selftrain.models import resolve_model
from selftrain.prompts import PromptSpec, build_messages, load_prompt_spec, render_prompt
from selftrain.report import track_round
from selftrain.rewards import get_reward
from selftrain.runs import model_dir, open_stage, timestamp

FLAGS = {"batch_size": "eval_batch_size", "max_samples": "eval_max_samples", "k": "k"}


def parser():
    p = base_parser(__doc__)
    p.add_argument("--model", help="checkpoint (default: results/model_star_iter{N}; the base model for N=0)")
    p.add_argument("--split", default="test", help="test (held out) or train")
    p.add_argument("--batch_size", type=int, help="config: eval_batch_size")
    p.add_argument("--max_samples", type=int, help="limit evaluation problems (config: eval_max_samples)")
    p.add_argument("--k", type=int, help="few-shot examples (default: as the model was trained)")
    p.add_argument("--save_results", action="store_true", help="write the per-problem results JSON")
    p.add_argument("--output", help="results JSON path")
    return p


def evaluate(config, model_name: str, records: list[dict], spec: PromptSpec) -> tuple[dict, list[dict]]:
    from selftrain.generation.jobs import open_backend

    backend, tokenizer = open_backend(config, model_name, spec, batch_size=config.eval_batch_size, role="eval")
    with backend:
        return evaluate_with(backend, tokenizer, config, records, spec)


def evaluate_with(backend, tokenizer, config, records: list[dict], spec: PromptSpec) -> tuple[dict, list[dict]]:
    """Greedy replies from `backend` to `records`, scored by the config's reward: (summary, per-problem rows)."""
    from selftrain.generation import Request, request_seed
    from selftrain.generation.base import described
    from selftrain.generation.jobs import sampling_params

    prompts = {r["id"]: render_prompt(tokenizer, r, spec) for r in records}
    params = sampling_params(config, greedy=True)
    requests = [Request(r["id"], prompts[r["id"]], tuple(build_messages(r, spec)), params,
                        request_seed(config.seed, r["id"])) for r in records]
    before = dataclasses.replace(backend.stats)
    completions = {c.key: c for c in backend.generate(requests)}
    outputs = []
    for r in records:
        c = completions[r["id"]]
        outputs.append({"id": r["id"], "difficulty": r.get("difficulty", "none"), "dataset": r.get("dataset"),
                        "prompt": r.get("prompt"), "messages": r.get("messages"), "prompt_text": prompts[r["id"]],
                        "expected": r["metadata"].get("expected_answer"),
                        "response": c.text, "finish_reason": c.finish_reason, "num_tokens": c.num_tokens,
                        "metadata": r["metadata"]})
    reward = get_reward(config)
    for out, result in zip(outputs, reward.score(outputs)):
        out.update(result)
    summary = summarize(outputs, backend.stats.since(before).as_dict())
    if hasattr(reward, "summarize"):
        summary.update(reward.summarize(outputs))
    summary["backend"] = described(backend)
    for out in outputs:  # keep the results file readable: the category stays, the rest of metadata goes
        out["category"] = out.pop("metadata").get("category")
        for key in ("prompt", "messages", "prompt_text"):
            out.pop(key)
    return summary, outputs


def summarize(outputs: list[dict], stats: dict) -> dict:
    """Accuracy (verifiable rewards) or mean reward, overall and per group, plus the hacking signals."""
    def per_group(rows: list[dict]) -> dict:
        result = reward_stats(rows)
        if "correct_rate" in result:
            result["accuracy"] = result.pop("correct_rate")
        return result

    overall = per_group(outputs)
    return {
        "n": len(outputs), "correct": sum(bool(o.get("is_correct")) for o in outputs) if "accuracy" in overall else None,
        "accuracy": overall.get("accuracy"), "mean_reward": overall["mean_reward"],
        "median_reward": overall["median_reward"],
        "answer_line_rate": round(sum("answer:" in o["response"].lower() for o in outputs) / max(len(outputs), 1), 4),
        **response_signals(outputs),
        **grouped(outputs, per_group),
        "tokens_per_s": stats["tokens_per_s"] if stats["seconds"] else None,
    }


def main(argv=None):
    args = parser().parse_args(argv)
    config = resolve_config(args, {k: v for k, v in FLAGS.items() if k != "k"})
    n = args.iteration
    if args.model:
        model_name = args.model
    elif n == 0:
        model_name = config.base_model_path
    else:
        model_name = str(model_dir(args.run_dir, n))
    resolve_model(model_name)  # missing checkpoint: one-line error before any work
    spec = _prompt_spec(args, config, model_name)
    records = load_eval_prompts(config, args.split)
    stage = open_stage(args, "eval", default=f"results/eval_star_iter{n}_{timestamp()}.json", suffix=".json")
    if stage.done():
        return
    out = stage.output
    log(f"evaluating {model_name} on {len(records)} {args.split} problems (k={spec.k}, greedy)")
    summary, outputs = evaluate(config, model_name, records, spec)
    summary.update(iteration=n, model=model_name, split=args.split, prompt_spec=spec.to_dict())
    print(json.dumps({k: v for k, v in summary.items() if k != "prompt_spec"}, indent=None))
    if args.run_dir or args.save_results or args.output:
        out.path.parent.mkdir(parents=True, exist_ok=True)
        out.path.write_text(json.dumps({**summary, "results": outputs}, indent=1) + "\n")
        out.finish(config, summary, {"model": model_name})
        log(f"results: {out.path}")
    if out.marker is not None:  # the iteration's last stage: its round metrics to the trackers
        track_round(config, args.run_dir, n)


def _prompt_spec(args, config, model_name: str) -> PromptSpec:
    """CLI > config file > the checkpoint's own spec > defaults."""
    in_file = load_config_file(args.config) if args.config else {}
    given = {s.split("=", 1)[0] for s in args.set}
    spec = PromptSpec.from_config(config)
    if args.k is not None:
        return PromptSpec(spec.system_prompt, args.k, spec.few_shot_file, spec.use_chat_template)
    explicit = any(key in in_file or key in given for key in ("k", "system_prompt", "few_shot_file", "use_chat_template"))
    if not explicit and Path(model_name).is_dir():
        trained = load_prompt_spec(model_name)
        if trained is not None:
            return trained
    return spec


if __name__ == "__main__":
    run(main)
