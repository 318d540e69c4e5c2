"""pairs.py: preference pairs from the model's own judgements (Self-Rewarding, paper §2.3).

Per prompt: the candidate with the highest mean judge score is chosen, the lowest rejected; a tie
(every scored candidate equal) gives no pair and is counted; a candidate cut off at max_new_tokens is
never chosen; candidates without a parsed score are left out; `self_rewarding.length_control` (rho)
prefers the shortest near-top and the longest near-bottom (judging.build_pair). The output is TRL's
standard preference format, the prompt rendered by the one prompt builder:
    id (= prompt_id), prompt (the exact prompt text), chosen, rejected, chosen_id, rejected_id,
    score_chosen, score_rejected, true_chosen, true_rejected, prompt_spec
The rule-checked truth (true_*) is for the metrics only: pair precision (the share of pairs whose
chosen reply truly scores higher), the judge's accuracy on this round's candidates, score histogram,
tie rate and the chosen/rejected lengths. A round with no pair at all stops with a message instead of
training on nothing.

  python pairs.py --input data/iter2.judged.jsonl          # + data/iter2.judgements.jsonl beside it
  python pairs.py --run_dir results/self_rewarding --iteration 2
"""
from __future__ import annotations

from selftrain.config import Config
from selftrain.errors import InputError
from selftrain.judging import (build_pairs, judge_agreement, length_stats, pair_precision, pair_precision_chance,
                               score_histogram)
from selftrain.logging import log
from selftrain.prompts import PromptSpec
from selftrain.records import read_jsonl, write_jsonl_atomic
from selftrain.self_rewarding import judgements_per_candidate, scored_groups


def make_pairs(config: Config, judged_path, judgements_path, output_path) -> dict:
    candidates = read_jsonl(judged_path)
    by_id = {c["id"]: c for c in candidates}
    groups = scored_groups(candidates, read_jsonl(judgements_path), judgements_per_candidate(config.self_rewarding),
                           str(judgements_path))
    pairs, reasons = build_pairs(groups, config.self_rewarding.length_control)
    flat = [c for cs in groups.values() for c in cs]
    truth = {c["id"]: c["true_score"] for c in flat}
    split = pair_precision(pairs, truth)
    metrics = {**reasons, "prompts": len(groups), "candidates": len(candidates), "distinct_candidates": len(flat),
               "pairs": len(pairs),
               "tie_rate": round(reasons.get("tie", 0) / max(len(groups), 1), 4),
               "pair_precision": split["precision"],  # right / all pairs, as before the split
               "pair_precision_split": split,
               "pair_precision_chance": pair_precision_chance(groups, config.self_rewarding.length_control),
               "judge": judge_agreement(groups),
               "score_histogram": score_histogram([c["mean_score"] for c in flat]),
               "true_score_histogram": score_histogram([c["true_score"] for c in flat]),
               "candidate_ifeval_strict": round(sum(bool(c.get("is_correct")) for c in candidates)
                                                / max(len(candidates), 1), 4),
               "mean_response_chars": round(sum(len(c["response"]) for c in flat) / max(len(flat), 1), 1),
               **length_stats(pairs, {c["id"]: c["response"] for c in flat})}
    if not pairs:
        raise InputError(f"{judgements_path}: no preference pairs: of {len(groups)} prompts, {reasons['tie']} tied "
                         f"(every scored candidate equal), {reasons['too_few_scored']} had fewer than two candidates "
                         f"with a parsed score ({reasons['unscored_candidates']} of {len(flat)} candidates unscored), "
                         f"{reasons['no_untruncated_top']} had only cut-off replies at the top; nothing to train on: "
                         f"sample more candidates or judgements (num_generations_per_prompt, "
                         f"self_rewarding.judge_samples) or give the judge more tokens (judge_max_new_tokens)")
    spec = PromptSpec.from_config(config).to_dict()
    rows = []
    for pair in pairs:
        chosen, rejected = by_id[pair["chosen_id"]], by_id[pair["rejected_id"]]
        rows.append({"id": chosen["prompt_id"], "prompt_id": chosen["prompt_id"], "prompt": chosen["prompt_text"],
                     "chosen": chosen["response"], "rejected": rejected["response"], **pair,
                     "true_chosen": truth[chosen["id"]], "true_rejected": truth[rejected["id"]],
                     "prompt_spec": spec})
    write_jsonl_atomic(output_path, rows)
    chance, judge = metrics["pair_precision_chance"], metrics["judge"]
    log(f"pairs: {len(pairs)} from {len(groups)} prompts ({reasons}); chosen truly higher in {split['right']}, "
        f"equal truths in {split['equal_truth']}, truly lower in {split['wrong']}: precision (truths differ) "
        f"{split['precision_decided']} (chance {chance['precision_decided']}), equal-truth rate "
        f"{split['equal_truth_rate']} (chance {chance['equal_truth_rate']}); judge accuracy on decided pairs "
        f"{judge['pairwise_accuracy']} (chance {judge['chance']['pairwise_accuracy']}), ties {judge['judge_tie_rate']}")
    return metrics


def main(argv=None):
    from selftrain.cli import base_parser, resolve_config
    from selftrain.runs import open_stage

    p = base_parser(__doc__)
    p.add_argument("--input", help="judged candidates JSONL (default in a run: the iteration's judged samples); "
                                   "self_rewarding: <stem>.judgements.jsonl beside it holds the judgements; "
                                   "iterative_dpo: each candidate's reward_score is its score")
    p.add_argument("--output", help="pairs JSONL (default by hand: beside --input, .pairs.jsonl)")
    args = p.parse_args(argv)
    config = resolve_config(args, {})
    by_reward = config.method == "iterative_dpo"  # pairs by reward_score (stages/reward_pairs.py)
    stage = open_stage(args, "pairs", inputs=("judged",) if by_reward else ("judged", "judgements"))
    if stage.done():
        return
    if by_reward:
        from selftrain.stages.reward_pairs import make_reward_pairs

        metrics = make_reward_pairs(config, stage.inputs["judged"], stage.path)
    else:
        metrics = make_pairs(config, stage.inputs["judged"], stage.inputs["judgements"], stage.path)
    stage.finish(config, metrics)
