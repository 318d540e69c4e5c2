"""Preference pairs from a reward's scores (method iterative_dpo: online / iterative DPO, as in RLHFlow's
and LMFlow's recipes): Self-Rewarding's pairs with the judge replaced by `reward_config`.

A candidate's score is its `reward_score` in the judged file (judge.py; any reward type: rule-based, a
local reward model, an API, a script). Replies with the same text for the same prompt are one candidate,
their scores averaged (a pair of two copies teaches nothing, and DPO refuses it). `judging.build_pairs`
then picks the pair per prompt, by the same rules as Self-Rewarding's: the highest score is chosen and
the lowest rejected; a tie gives no pair and is counted; a reply cut off at max_new_tokens is never
chosen; a candidate without a score (reward_score null) is left out and counted;
`iterative_dpo.length_control` (rho) prefers the shortest near the top and the longest near the bottom.

The output is the pairs format Self-Rewarding writes (TRL's standard format): id (= prompt_id),
prompt_id, prompt (the exact prompt_text), chosen, rejected, chosen_id, rejected_id, score_chosen,
score_rejected, prompt_spec; with the ifeval reward also true_chosen and true_rejected, the rule-checked
0..5 truth (self_rewarding.truth_score), so that pair precision and the chosen/rejected lengths compare
with Self-Rewarding's. A round with no pair at all stops with a message and writes nothing.
"""
from __future__ import annotations

import statistics
from typing import Callable

from selftrain.config import Config
from selftrain.errors import InputError
from selftrain.judging import build_pairs, length_stats, pair_precision, pair_precision_chance, score_histogram
from selftrain.logging import log
from selftrain.prompts import PromptSpec
from selftrain.records import iter_jsonl, write_jsonl_atomic
from selftrain.rewards.api import check_score
from selftrain.self_rewarding import merged_reply, same_replies, truth_score

FIELDS = ("id", "prompt_id", "prompt_text", "response")


def read_judged(path) -> list[dict]:
    """The judged candidates, each with a string id, prompt_id, prompt_text and response and a finite
    reward_score (or null: unscored); an error names the file, line and field."""
    records = []
    for lineno, record in iter_jsonl(path):
        for key in FIELDS:
            if not isinstance(record.get(key), str):
                raise InputError(f"{path}:{lineno}: {key}: missing (is this a judged samples file?)")
        if "reward_score" not in record:
            raise InputError(f"{path}:{lineno}: reward_score: missing (score the samples with judge.py first)")
        if record["reward_score"] is not None:
            try:
                check_score(record["reward_score"])
            except ValueError as exc:
                raise InputError(f"{path}:{lineno}: reward_score: {exc}") from None
        records.append(record)
    if not records:
        raise InputError(f"{path}: file is empty (no judged candidates)")
    return records


def reward_groups(candidates: list[dict], truth: Callable[[dict], int] | None = None) -> dict[str, list[dict]]:
    """Candidates per prompt in build_pair's shape: `id`, `response` and `truncated` of the first copy of a
    text, `mean_score` (the mean reward_score of its copies; None when none has one), `copies`, and
    `true_score` (of the first copy) when `truth` is given."""
    out = {}
    for prompt_id, by_text in same_replies(candidates).items():
        out[prompt_id] = []
        for copies in by_text.values():
            scores = [float(c["reward_score"]) for c in copies if c["reward_score"] is not None]
            out[prompt_id].append({**merged_reply(copies), **({"true_score": truth(copies[0])} if truth else {}),
                                   "mean_score": statistics.fmean(scores) if scores else None})
    return out


def no_pairs_message(path, counts: dict) -> str:
    return (f"{path}: no preference pairs: of {counts['prompts']} prompts, {counts['tie']} tied (every scored "
            f"candidate got the same reward), {counts['too_few_scored']} had fewer than two distinct scored "
            f"candidates ({counts['unscored_candidates']} unscored), {counts['no_untruncated_top']} had only "
            f"cut-off replies above the lowest score; nothing to train on: use a reward that tells replies apart "
            f"(reward_config), sample more or more varied candidates (num_generations_per_prompt, temperature) "
            f"or give replies room to end (max_new_tokens)")


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def pair_metrics(config: Config, candidates: list[dict], groups: dict, pairs: list[dict], counts: dict,
                 with_truth: bool) -> dict:
    """The round's counts per reason, ties, candidate accuracy, rewards and lengths; with the truth, pair
    precision and its chance level under the keys of Self-Rewarding's pairs marker (pairs.make_pairs), so
    that the reports read both loops alike."""
    distinct = {c["id"]: c for cs in groups.values() for c in cs}
    verifiable = all(c.get("is_correct") is not None for c in candidates)
    metrics = {**counts, "candidates": len(candidates), "distinct_candidates": len(distinct), "pairs": len(pairs),
               "tie_rate": round(counts["tie"] / max(counts["prompts"], 1), 4),
               "candidate_accuracy": (round(sum(bool(c["is_correct"]) for c in candidates) / len(candidates), 4)
                                      if verifiable else None),
               "mean_reward": _mean([c["mean_score"] for c in distinct.values() if c["mean_score"] is not None]),
               "mean_score_chosen": _mean([p["score_chosen"] for p in pairs]),
               "mean_score_rejected": _mean([p["score_rejected"] for p in pairs]),
               "mean_response_chars": _mean([len(c["response"]) for c in distinct.values()]),
               **length_stats(pairs, {i: c["response"] for i, c in distinct.items()})}
    if with_truth:
        truth = {i: c["true_score"] for i, c in distinct.items()}
        split = pair_precision(pairs, truth)
        metrics.update(pair_precision=split["precision"], pair_precision_split=split,
                       pair_precision_chance=pair_precision_chance(groups, config.iterative_dpo.length_control),
                       true_score_histogram=score_histogram(list(truth.values())))
    return metrics


def make_reward_pairs(config: Config, judged_path, output_path) -> dict:
    """Write the round's pairs to `output_path`; its metrics. InputError (nothing written) when no prompt
    gives a pair."""
    candidates = read_judged(judged_path)
    rc = config.reward_config
    with_truth = (rc.type, rc.rule_type) == ("rule_based", "ifeval")
    groups = reward_groups(candidates, truth_score if with_truth else None)
    pairs, counts = build_pairs(groups, config.iterative_dpo.length_control)
    if not pairs:
        raise InputError(no_pairs_message(judged_path, counts))
    metrics = pair_metrics(config, candidates, groups, pairs, counts, with_truth)
    judged = {c["id"]: c for c in candidates}  # a pair names the first copy of each of its replies
    truth = {c["id"]: c.get("true_score") for cs in groups.values() for c in cs}
    spec = PromptSpec.from_config(config).to_dict()
    rows = []
    for pair in pairs:
        chosen, rejected = judged[pair["chosen_id"]], judged[pair["rejected_id"]]
        truths = {"true_chosen": truth[chosen["id"]], "true_rejected": truth[rejected["id"]]} if with_truth else {}
        rows.append({"id": pair["prompt_id"], **pair, "prompt": chosen["prompt_text"], "chosen": chosen["response"],
                     "rejected": rejected["response"], **truths, "prompt_spec": spec})
    write_jsonl_atomic(output_path, rows)
    log(f"pairs: {len(pairs)} from {counts['prompts']} prompts by {rc.type} reward (tie {counts['tie']}, "
        f"too few scored {counts['too_few_scored']}, only cut-off on top {counts['no_untruncated_top']})"
        + (f"; pair precision {metrics['pair_precision']} (chance {metrics['pair_precision_chance']['precision']})"
           if with_truth else ""))
    return metrics
