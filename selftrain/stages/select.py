"""Selection into a training set.

`filter_strategy` picks the samples (seed 000):
  correct        verified-correct only (the STaR / Expert Iteration rule)
  threshold      reward_score >= filter_threshold
  top_k_percent  the best filter_top_k_percent % of all samples by reward_score
  best_of_n      the best sample of each prompt
  none           everything (for ablations, e.g. seed 002's unfiltered run)
Ranking (top_k_percent, best_of_n, the per-prompt cap, downsampling) is by
reward; equal rewards go first to prompts with fewer better-ranked samples, so
a 0/1 reward spreads the kept samples over prompts instead of filling up the
first ones, then to a seeded hash of the id (deterministic, not biased to
any file or id order). Then it adds kept rationales, drops replies cut off at
max_new_tokens (they never stopped), drops duplicate replies per prompt, keeps
at most `max_per_prompt` per prompt (the highest rewards), and, with `balance_by`,
evens out the classes of the kept set (seed 003's filter kept 28% "yes" of a
45%-"yes" dataset and the model learned to say "no"):
  downsample  every class keeps as many examples as the smallest (highest rewards first)
  upsample    smaller classes repeat their examples, in order, up to the largest
Every kept record has `prompt_text` (no hint) and `response`; train.py appends
EOS to every target.
"""
from __future__ import annotations

import math
from collections import defaultdict

from selftrain.config import Config
from selftrain.logging import log
from selftrain.metrics import counts, group_value, normalize_response
from selftrain.records import seeded_key

TRAIN_FIELDS = ("id", "prompt_id", "prompt_text", "response", "difficulty", "dataset", "metadata", "iteration",
                "reward_score")


def _score(record: dict) -> float:
    return float(record["reward_score"])


def ranked(records: list[dict], seed: int) -> list[dict]:
    """Best first: by reward, then by rank within the prompt, then by a seeded hash of the id."""
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (-_score(r), seeded_key(r, seed))):
        by_prompt[r.get("prompt_id", r["id"])].append(r)
    position = {r["id"]: i for rows in by_prompt.values() for i, r in enumerate(rows)}
    return sorted(records, key=lambda r: (-_score(r), position[r["id"]], seeded_key(r, seed)))


def filter_samples(config: Config, judged: list[dict]) -> list[dict]:
    """The judged samples `filter_strategy` keeps, in their original order."""
    strategy = config.filter_strategy
    if strategy == "correct":
        return [r for r in judged if r.get("is_correct")]
    if strategy == "none":
        return list(judged)
    if strategy == "threshold":
        return [r for r in judged if _score(r) >= config.filter_threshold]
    order = ranked(judged, config.seed)
    if strategy == "top_k_percent":
        count = math.ceil(len(judged) * config.filter_top_k_percent / 100)
        keep = {r["id"] for r in order[:count]}
    elif strategy == "best_of_n":
        keep, seen = set(), set()
        for r in order:
            if r["prompt_id"] not in seen:
                seen.add(r["prompt_id"])
                keep.add(r["id"])
    else:
        raise ValueError(f"unknown filter_strategy {strategy!r}")  # Config.validate refuses it earlier
    return [r for r in judged if r["id"] in keep]


def select_examples(config: Config, judged: list[dict], rationales: list[dict]) -> tuple[list[dict], dict]:
    # within the per-prompt cap, higher rewards go first
    candidates = [dict(r, source="sample") for r in ranked(filter_samples(config, judged), config.seed)]
    candidates += [dict(r, source="rationalization") for r in rationales
                   if r.get("is_correct") and not r.get("leaked_hint")]
    stats = {"filter_strategy": config.filter_strategy, "candidates": len(candidates),
             "truncated_dropped": 0, "duplicates_dropped": 0, "over_cap_dropped": 0}
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    seen: dict[str, set[str]] = defaultdict(set)
    for r in candidates:
        if r.get("finish_reason") == "length":
            stats["truncated_dropped"] += 1
            continue
        key = normalize_response(r["response"])
        if not key or key in seen[r["prompt_id"]]:
            stats["duplicates_dropped"] += 1
            continue
        if len(by_prompt[r["prompt_id"]]) >= config.max_per_prompt:
            stats["over_cap_dropped"] += 1
            continue
        seen[r["prompt_id"]].add(key)
        by_prompt[r["prompt_id"]].append(r)
    kept = [{**{k: r[k] for k in TRAIN_FIELDS if k in r}, "source": r["source"]}
            for rs in by_prompt.values() for r in rs]
    if config.balance_by:
        stats.update(balance_by=config.balance_by, before_balance=counts(kept, config.balance_by))
        kept = balance(kept, config.balance_by, config.balance_method, config.seed)
    stats.update(train_examples=len(kept), prompts_covered=len({r["prompt_id"] for r in kept}),
                 kept_percent=round(100 * sum(r["source"] == "sample" for r in kept) / max(len(judged), 1), 2),
                 from_samples=sum(r["source"] == "sample" for r in kept),
                 from_rationales=sum(r["source"] == "rationalization" for r in kept),
                 upsampled=sum(r["source"] == "upsampled" for r in kept))
    for key in ("difficulty", "category", "dataset", *([config.balance_by] if config.balance_by else [])):
        per = counts(kept, key)
        if set(per) != {"none"}:
            stats[f"kept_per_{key}"] = per
    log(f"select: {stats['train_examples']} training examples from {stats['prompts_covered']} prompts "
        f"({stats['from_rationales']} rationalized; dropped {stats['duplicates_dropped']} duplicates, "
        f"{stats['truncated_dropped']} truncated)")
    return kept, stats


def balance(kept: list[dict], key: str, method: str, seed: int = 0) -> list[dict]:
    """Even out the classes of `kept` (records in priority order: best first within each class).

    Records without a value for `key` ("none") are kept as they are and do not count as a class."""
    classes: dict[str, list[dict]] = defaultdict(list)
    for r in kept:
        if group_value(r, key) != "none":
            classes[group_value(r, key)].append(r)
    if len(classes) < 2:
        return kept
    if method == "downsample":
        size = min(len(rows) for rows in classes.values())
        keep = {id(r) for rows in classes.values() for r in ranked(rows, seed)[:size]}
        return [r for r in kept if id(r) in keep or group_value(r, key) == "none"]
    size = max(len(rows) for rows in classes.values())
    extra = []
    for rows in classes.values():
        for i in range(size - len(rows)):
            original = rows[i % len(rows)]
            extra.append(dict(original, id=f"{original['id']}~up{i // len(rows) + 1}", source="upsampled"))
    return kept + extra


def write_training_set(config: Config, judged_path, rationales_path, output_path) -> dict:
    """Select from a judged file (and the rationales, if any) and write the training set whole."""
    from selftrain.prompts import PromptSpec
    from selftrain.records import read_jsonl, write_jsonl_atomic

    judged = read_jsonl(judged_path)
    rationales = read_jsonl(rationales_path, allow_empty=True) if rationales_path is not None else []
    kept, metrics = select_examples(config, judged, rationales)
    spec = PromptSpec.from_config(config).to_dict()  # the prompt format the model is trained on
    write_jsonl_atomic(output_path, [dict(r, prompt_spec=spec) for r in kept])
    log(f"training set: {output_path}")
    return metrics


USAGE = """select_data.py: the training set of an iteration from its judged samples (and STaR's rationales).

  python select_data.py --input data/star_iter1_train.judged.jsonl      # writes data/star_iter1_train.jsonl
  python select_data.py --run_dir results/demo --iteration 1
By hand, data/X.rationales.jsonl beside data/X.judged.jsonl is used when it exists.
"""


def main(argv=None):
    from selftrain.cli import base_parser, resolve_config
    from selftrain.runs import open_stage

    p = base_parser(USAGE)
    p.add_argument("--input", help="judged JSONL (default in a run: the iteration's judged samples)")
    p.add_argument("--output", help="training set JSONL (default by hand: beside --input, without .judged)")
    args = p.parse_args(argv)
    config = resolve_config(args, {})
    # STaR trains on its rationales too (in a run they must exist; by hand, when beside the input);
    # Expert Iteration never does, even if a rationales file lies around
    star, in_run = config.method == "star", bool(args.run_dir and not args.input)
    stage = open_stage(args, "train", inputs=("judged", "rationales") if star and in_run else ("judged",),
                       optional=("rationales",) if star and not in_run else (), hand_output="")
    if stage.done():
        return
    metrics = write_training_set(config, stage.inputs["judged"], stage.inputs.get("rationales"), stage.path)
    stage.finish(config, metrics)
