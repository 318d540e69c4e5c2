"""distill_samples.py: Phase C's on-policy round (seed 003's "self-guided loop"): the model's own samples
on Track B's prompt, and the preference pairs they give.

Round t (iteration t >= 3; num_rounds 3: one round, 4: two, ...) samples `distill.policy_samples`
replies at `distill.policy_temperature` from M_{t-1} (Track B's model for t = 3) for every question
Track B trained on (the validated set of iteration 1; `distill.policy_questions` N > 0: N of them, a
seeded draw that differs from round to round), on Track B's prompt: the question and the base
student's draft, the exact training and evaluation prompt. The samples are generate.py's records
(id "<question>#<j>", prompt_id, sample_idx, prompt_text, response, finish_reason, ...), written as
iteration t's `samples` stage, so judge.py scores them with the yesno reward (`judged`: the verdict
read as evaluation reads it, against the truth) and `distill_data.py --kind pairs` pairs them
(`policy_pairs`): per question one correct reply (chosen) against one wrong or unclear one
(rejected), by iterative DPO's pair rule (judging.build_pairs: a cut-off reply is never chosen, a
question whose samples are all correct or all wrong gives no pair), the pick among equals seeded.

  python distill_samples.py --run_dir results/distill --iteration 3
"""
from __future__ import annotations

import dataclasses

from selftrain.cli import base_parser, resolve_config, run
from selftrain.config import Config
from selftrain.distill import FIRST_ROUND, track_b_record
from selftrain.errors import InputError
from selftrain.judging import build_pairs, length_stats
from selftrain.logging import log
from selftrain.metrics import counts
from selftrain.prompts import PromptSpec
from selftrain.records import read_jsonl, seeded_key
from selftrain.runs import finished_output, generator_for, open_stage
from selftrain.stages.reward_pairs import reward_groups


def question_id(row: dict) -> str:
    """The question a validated row is (an upsampled copy's id is `<question>~up<k>`)."""
    return row["id"].split("~up")[0]


def policy_prompts(kept: list[dict], questions: int = 0, seed: str = "") -> list[dict]:
    """Track B's prompt record of each question of the validated set, once, in its order; `questions` > 0:
    only that many, the first by `seed` (records.seeded_key: the draw depends on the ids alone)."""
    seen, prompts = set(), []
    for row in kept:
        if question_id(row) not in seen:
            seen.add(question_id(row))
            prompts.append(track_b_record({**row, "id": question_id(row)}, row["draft"]))
    if 0 < questions < len(prompts):
        drawn = {p["id"] for p in sorted(prompts, key=lambda p: seeded_key(p, seed))[:questions]}
        prompts = [p for p in prompts if p["id"] in drawn]
    return prompts


def write_samples(config: Config, model_name: str, kept: list[dict], output_path, iteration: int) -> dict:
    """M_{t-1}'s samples for the round into `output_path` (generate.py's stage 1, resumable); the metrics."""
    from selftrain.generation.jobs import open_backend
    from selftrain.stages.generate import generate_samples

    d = config.distill
    sampling = dataclasses.replace(config, num_generations_per_prompt=d.policy_samples,
                                   temperature=d.policy_temperature)
    prompts = policy_prompts(kept, d.policy_questions, f"{config.seed}:policy:{iteration}")
    backend, tokenizer = open_backend(sampling, model_name, PromptSpec.from_config(config),
                                      batch_size=config.batch_size, role="sample")
    with backend:
        metrics = generate_samples(sampling, model_name, prompts, output_path, iteration, backend, tokenizer)
    return {**metrics, "questions": len(prompts), "of_questions": len({question_id(r) for r in kept}),
            "policy_samples": d.policy_samples,
            "policy_temperature": d.policy_temperature}


# --- the pairs -----------------------------------------------------------------------------------

def seeded_pairs(groups: dict, seed: int) -> tuple[list[dict], dict]:
    """judging.build_pairs over `groups`, the pick among equally scored replies a seeded one: build_pair
    takes the lowest id among equals, so each question's candidates are numbered in a seeded order for
    it and the pair's ids mapped back."""
    numbered, original = {}, {}
    for prompt_id, candidates in groups.items():
        order = sorted(candidates, key=lambda c: seeded_key(c, seed))
        numbered[prompt_id] = [{**c, "id": i} for i, c in enumerate(order)]
        original[prompt_id] = [c["id"] for c in order]
    pairs, reasons = build_pairs(numbered)
    for p in pairs:
        ids = original[p["prompt_id"]]
        p["chosen_id"], p["rejected_id"] = ids[p["chosen_id"]], ids[p["rejected_id"]]
    return pairs, reasons


def outcomes(judged: list[dict]) -> dict:
    """Questions whose samples are all correct, all wrong (or unclear), or mixed."""
    by_question = {}
    for r in judged:
        by_question.setdefault(r["prompt_id"], []).append(bool(r["is_correct"]))
    return {"all_correct": sum(all(v) for v in by_question.values()),
            "all_wrong": sum(not any(v) for v in by_question.values()),
            "mixed": sum(any(v) and not all(v) for v in by_question.values())}


def policy_pairs(config: Config, judged: list[dict], spec: PromptSpec, where: str) -> tuple[list[dict], dict]:
    """The round's on-policy pairs from its judged samples (`where` names the file in errors) and what
    the samples were. A pair: id `on_policy:<question>`, prompt (the samples' prompt_text), chosen (a
    correct, finished reply), rejected (a wrong or unclear one, possibly cut off), their ids and answers,
    the question's metadata. Empty replies (nothing to train on) are left out and counted."""
    for r in judged:
        if r.get("is_correct") is None or "predicted" not in r:
            raise InputError(f"{where}: sample {r['id']}: is_correct / predicted missing (judge it with the yesno "
                             f"reward: reward_config {{type: rule_based, rule_type: yesno}})")
    usable = [r for r in judged if r["response"].strip()]
    groups = reward_groups(usable)
    pairs, reasons = seeded_pairs(groups, config.seed)
    by_id = {r["id"]: r for r in judged}
    rows = []
    for p in pairs:
        chosen, rejected = by_id[p["chosen_id"]], by_id[p["rejected_id"]]
        rows.append({"id": f"on_policy:{p['prompt_id']}", "prompt_id": p["prompt_id"], "kind": "on_policy",
                     "prompt": chosen["prompt_text"], "metadata": chosen["metadata"],
                     "chosen": chosen["response"], "rejected": rejected["response"],
                     "chosen_id": chosen["id"], "rejected_id": rejected["id"],
                     "chosen_answer": chosen["predicted"], "rejected_answer": rejected["predicted"],
                     "rejected_kind": "wrong_sample" if rejected["predicted"] else "unclear_sample",
                     "rejected_cut_off": rejected.get("finish_reason") == "length", "prompt_spec": spec.to_dict()})
    questions = outcomes(judged)
    metrics = {"samples": len(judged), "questions": sum(questions.values()),
               "sample_accuracy": round(sum(bool(r["is_correct"]) for r in judged) / len(judged), 4),
               "unclear_samples": sum(r["predicted"] is None for r in judged),
               "cut_off_samples": sum(r.get("finish_reason") == "length" for r in judged),
               "empty_samples": len(judged) - len(usable), "sample_answers": counts(
                   [{"s": str(r["predicted"]).lower()} for r in judged], "s"),
               **{f"questions_{k}": v for k, v in questions.items()},
               "pair_reasons": {k: reasons[k] for k in ("paired", "tie", "too_few_scored", "no_untruncated_top")},
               "on_policy_classes": counts(rows, "answer"),
               **{k: v for k, v in length_stats(pairs, {r["id"]: r["response"] for r in usable}).items()
                  if k != "n_pairs"}}
    log(f"on-policy: {len(judged)} samples, accuracy {metrics['sample_accuracy']}; questions all correct "
        f"{questions['all_correct']}, all wrong {questions['all_wrong']}, mixed {questions['mixed']}; "
        f"{len(rows)} pairs")
    return rows, metrics


def main(argv=None):
    p = base_parser(__doc__)
    p.add_argument("--model", help="the model that samples (default: iteration N-1's)")
    args = p.parse_args(argv)
    config = resolve_config(args, {})
    if not args.run_dir:
        raise InputError("distill_samples.py: give --run_dir (the round samples the run's validated questions)")
    if args.iteration < FIRST_ROUND:
        raise InputError(f"--iteration {args.iteration}: Phase C's on-policy rounds are iterations >= {FIRST_ROUND} "
                         f"(0 base, 1 Track A, 2 Track B)")
    if not config.distill.on_policy_pairs:
        raise InputError("distill.on_policy_pairs is false: the round's pairs use no samples")
    kept = read_jsonl(finished_output(args.run_dir, 1, "validated"))
    stage = open_stage(args, "samples")
    if stage.done():
        return
    model = args.model or generator_for(config, args.run_dir, args.iteration)
    stage.finish(config, write_samples(config, model, kept, stage.path, args.iteration), {"model": model})


if __name__ == "__main__":
    run(main)
