"""Selection into a training set (the STaR / Expert Iteration rule: correct only).

Keeps verified-correct samples and kept rationales, drops replies cut off at
max_new_tokens (they never stopped), drops duplicate replies per prompt, keeps
at most `max_per_prompt` per prompt. Every kept record has `prompt_text` (no
hint) and `response`; train.py appends EOS to every target.
"""
from __future__ import annotations

import re
from collections import defaultdict

from selftrain.config import Config
from selftrain.logging import log

TRAIN_FIELDS = ("id", "prompt_id", "prompt_text", "response", "difficulty", "metadata", "iteration")


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def select_examples(config: Config, judged: list[dict], rationales: list[dict]) -> tuple[list[dict], dict]:
    candidates = [dict(r, source="sample") for r in judged if r.get("is_correct")]
    candidates += [dict(r, source="rationalization") for r in rationales
                   if r.get("is_correct") and not r.get("leaked_hint")]
    stats = {"candidates": len(candidates), "truncated_dropped": 0, "duplicates_dropped": 0, "over_cap_dropped": 0}
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    seen: dict[str, set[str]] = defaultdict(set)
    for r in candidates:
        if r.get("finish_reason") == "length":
            stats["truncated_dropped"] += 1
            continue
        key = _norm(r["response"])
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
    stats.update(train_examples=len(kept), prompts_covered=len(by_prompt),
                 from_samples=sum(r["source"] == "sample" for r in kept),
                 from_rationales=sum(r["source"] == "rationalization" for r in kept))
    log(f"select: {stats['train_examples']} training examples from {stats['prompts_covered']} prompts "
        f"({stats['from_rationales']} rationalized; dropped {stats['duplicates_dropped']} duplicates, "
        f"{stats['truncated_dropped']} truncated)")
    return kept, stats
