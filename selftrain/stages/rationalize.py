"""STaR stage 2: rationalization.

For every prompt with no correct sample, the correct answer is added to the
question as a hint and the model reasons again. A rationale is kept when it
reaches the answer and does not mention the hint; it is stored with
`prompt_text` rendered *without* the hint (what it is trained on) and the hinted
prompt in `hinted_prompt_text` (what it was generated from).
"""
from __future__ import annotations

import re
from collections import defaultdict

from selftrain.config import Config
from selftrain.generation.jobs import open_backend, run_jobs, sampling_params, stage_seed
from selftrain.logging import log
from selftrain.prompts import PromptSpec, build_messages, render_prompt
from selftrain.records import JsonlAppender, read_jsonl, write_jsonl_atomic
from selftrain.rewards import get_reward, is_verifiable
from selftrain.stages.generate import INPUT_FIELDS

# A rationale that talks about being told the answer teaches the model to expect a hint.
LEAK = re.compile(r"\bhint\b|correct answer is|answer (?:was|is) (?:given|provided)|we are told|as given", re.I)


def unsolved_prompts(judged: list[dict]) -> list[dict]:
    """One record per prompt that no sample solved, in first-seen order."""
    by_prompt = defaultdict(list)
    for r in judged:
        by_prompt[r["prompt_id"]].append(r)
    return [rs[0] for rs in by_prompt.values() if not any(r.get("is_correct") for r in rs)]


def rationalization_todo(config: Config, judged: list[dict]) -> tuple[list[dict], dict]:
    """The unsolved prompts that can be hinted (they have an expected answer), and why others are not."""
    if not config.rationalize:
        return [], {"skipped": "rationalize is false"}
    if not is_verifiable(config):
        return [], {"skipped": f"reward {config.reward_config.type!r} decides no correctness, so nothing is unsolved"}
    unsolved = unsolved_prompts(judged)
    todo = [s for s in unsolved if "expected_answer" in s.get("metadata", {})]
    return todo, {"unsolved_prompts": len(unsolved), "without_expected_answer": len(unsolved) - len(todo)}


def rationalize_file(config: Config, model_name: str, judged_path, output_path, iteration: int,
                     backend=None, tokenizer=None) -> dict:
    """`backend` generates (opened here when None and needed); `tokenizer` is the student's."""
    judged = read_jsonl(judged_path)
    todo, metrics = rationalization_todo(config, judged)
    if todo and backend is None:
        backend, tokenizer = open_backend(config, model_name, PromptSpec.from_config(config),
                                          batch_size=config.batch_size, role="sample")
        with backend:
            return rationalize_file(config, model_name, judged_path, output_path, iteration, backend, tokenizer)
    spec = PromptSpec.from_config(config)
    jobs = []
    for sample in todo:
        record = {k: sample[k] for k in INPUT_FIELDS if k in sample}
        answer = sample["metadata"]["expected_answer"]
        plain, hinted = render_prompt(tokenizer, record, spec), render_prompt(tokenizer, record, spec, hint=answer)
        for j in range(config.rationalization_samples):
            # the reply is generated from the hinted prompt and trained on with the plain one
            jobs.append({
                "id": f"{sample['prompt_id']}#r{j}", "prompt_id": sample["prompt_id"], "sample_idx": j,
                "iteration": iteration, "generator": model_name, "source": "rationalization", **record,
                "prompt_text": plain, "hinted_prompt_text": hinted, "hint": answer,
                "_prompt": hinted, "_messages": build_messages(record, spec, hint=answer),
            })
    log(f"rationalize: {len(todo)} unsolved prompts x {config.rationalization_samples} hinted attempts"
        + (f" ({metrics['skipped']})" if "skipped" in metrics else ""))
    metrics["attempts"] = len(jobs)
    with JsonlAppender(output_path) as appender:
        if jobs:
            metrics.update(run_jobs(backend, jobs, appender, sampling_params(config), stage_seed(config, iteration)))
    attempts = read_jsonl(output_path, allow_empty=True)
    pending = [a for a in attempts if "is_correct" not in a]
    if pending:  # score once, after generation, and rewrite the file whole
        scored = {a["id"]: {**a, **result, "leaked_hint": bool(LEAK.search(a["response"]))}
                  for a, result in zip(pending, get_reward(config).score(pending))}
        attempts = [scored.get(a["id"], a) for a in attempts]
        write_jsonl_atomic(output_path, attempts)
    kept = [a for a in attempts if a["is_correct"] and not a["leaked_hint"] and a["finish_reason"] == "stop"]
    metrics.update(correct=sum(a["is_correct"] for a in attempts),
                   leaked_hint=sum(a["is_correct"] and a["leaked_hint"] for a in attempts),
                   kept=len(kept), rationalized_prompts=len({a["prompt_id"] for a in kept}))
    log(f"rationalize done: kept {metrics['kept']} rationales for {metrics['rationalized_prompts']} prompts "
        f"({metrics['leaked_hint']} dropped for mentioning the hint)")
    return metrics


USAGE = """rationalize.py: STaR rationalization of the prompts no sample solved.

  python rationalize.py --input data/star_iter1_train.judged.jsonl --output data/star_iter1_train.rationales.jsonl
  python rationalize.py --run_dir results/demo --iteration 1
"""


def main(argv=None):
    from selftrain.cli import base_parser, resolve_config
    from selftrain.runs import generator_for, open_stage

    p = base_parser(USAGE)
    p.add_argument("--input", help="judged JSONL (default in a run: the iteration's judged samples)")
    p.add_argument("--output", help="rationales JSONL (default by hand: beside --input, .rationales.jsonl)")
    p.add_argument("--model_name", help="model that rationalizes (default: the iteration's generator)")
    p.add_argument("--batch_size", type=int)
    args = p.parse_args(argv)
    config = resolve_config(args, {"batch_size": "batch_size"})
    stage = open_stage(args, "rationales", inputs=("judged",))
    if stage.done():
        return
    model_name = args.model_name or generator_for(config, args.run_dir, args.iteration)
    metrics = rationalize_file(config, model_name, stage.inputs["judged"], stage.path, args.iteration)
    stage.finish(config, metrics, {"model": model_name})
