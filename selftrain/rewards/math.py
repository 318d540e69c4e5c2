"""Rule-based math reward: final-answer extraction plus equivalence (selftrain.answers).

`metadata.expected_answer` may be a string or a number, as in the seed-000
format; a number is compared by its exact decimal text (records.answer_text),
the same text a validated prompt record stores.

Runs on the main thread: math_verify's timeouts use signal.alarm.
"""
from __future__ import annotations

from selftrain.answers import score_math
from selftrain.rewards.checked import CheckedReward
from selftrain.records import answer_text


def _expected(record: dict) -> str:
    """The record's expected answer as text; ValueError saying what is wrong with it."""
    metadata = record.get("metadata")
    if not isinstance(metadata, dict) or "expected_answer" not in metadata:
        raise ValueError("metadata.expected_answer: missing (math scoring needs it)")
    try:
        return answer_text(metadata["expected_answer"])
    except ValueError as exc:
        raise ValueError(f"metadata.expected_answer: {exc}") from None


class MathReward(CheckedReward):
    name = "rule_based/math"

    @staticmethod
    def fact(record: dict) -> str:
        return _expected(record)

    def score_one(self, record: dict, answer: str) -> dict:
        return score_math(record["response"], answer)
