"""Round metrics (seed 000's "Monitor Training") and signals of reward hacking.

Reward: mean and median, overall and per difficulty, category and dataset.
Hacking signals, which move when a loop games its reward instead of learning
the task: mean reply length, distinct-2 (unique word bigrams / all bigrams;
falls when replies collapse onto a template), duplicate rate (replies equal to
an earlier reply to the same prompt) and the rate of replies with no answer.
"""
from __future__ import annotations

import re
import statistics
from collections import defaultdict
from typing import Callable

GROUP_KEYS = ("difficulty", "category", "dataset")


def normalize_response(text: str) -> str:
    """The form two replies must share to count as duplicates."""
    return re.sub(r"\s+", " ", text.strip().lower())


def distinct_n(texts: list[str], n: int = 2) -> float | None:
    grams, total = set(), 0
    for text in texts:
        words = text.split()
        for i in range(len(words) - n + 1):
            grams.add(tuple(words[i:i + n]))
            total += 1
    return round(len(grams) / total, 4) if total else None


def duplicate_rate(records: list[dict]) -> float:
    seen: dict[str, set[str]] = defaultdict(set)
    duplicates = 0
    for r in records:
        key = normalize_response(r["response"])
        prompt = r.get("prompt_id", r.get("id"))
        duplicates += key in seen[prompt]
        seen[prompt].add(key)
    return round(duplicates / max(len(records), 1), 4)


def group_value(record: dict, key: str) -> str:
    if key == "category":
        return str(record.get("metadata", {}).get("category", "none"))
    if key == "answer":
        return str(record.get("metadata", {}).get("expected_answer", "none")).strip().lower()
    return str(record.get(key, "none"))


def _rate(records: list[dict], test: Callable[[dict], bool]) -> float:
    return round(sum(bool(test(r)) for r in records) / max(len(records), 1), 4)


def reward_stats(records: list[dict]) -> dict:
    scores = [float(r["reward_score"]) for r in records]
    stats = {"n": len(records),
             "mean_reward": round(statistics.fmean(scores), 4) if scores else None,
             "median_reward": round(statistics.median(scores), 4) if scores else None}
    if records and all(r.get("is_correct") is not None for r in records):
        stats["correct_rate"] = _rate(records, lambda r: r["is_correct"])
    return stats


def response_signals(records: list[dict]) -> dict:
    texts = [r["response"] for r in records]
    # a server that answered n choices in one call reports only their total: those replies have no count
    tokens = [r["num_tokens"] for r in records if r.get("num_tokens") is not None]
    return {
        "mean_response_chars": round(statistics.fmean(len(t) for t in texts), 1) if texts else None,
        "mean_response_tokens": round(statistics.fmean(tokens), 1) if tokens else None,
        "distinct_2": distinct_n(texts, 2),
        "duplicate_rate": duplicate_rate(records),
        "no_answer_rate": _rate(records, lambda r: not r.get("answer_found", True)),
        "truncated_rate": _rate(records, lambda r: r.get("finish_reason") == "length"),
    }


def grouped(records: list[dict], stats: Callable[[list[dict]], dict] = reward_stats) -> dict:
    """`stats` per difficulty, category and dataset (groups with a single value are left out)."""
    out = {}
    for key in GROUP_KEYS:
        groups: dict[str, list[dict]] = defaultdict(list)
        for r in records:
            groups[group_value(r, key)].append(r)
        if len(groups) > 1 or (groups and "none" not in groups):
            out[f"per_{key}"] = {name: stats(rows) for name, rows in sorted(groups.items())}
    return out


def counts(records: list[dict], key: str) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for r in records:
        out[group_value(r, key)] += 1
    return dict(sorted(out.items()))
