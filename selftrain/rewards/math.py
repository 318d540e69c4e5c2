"""Rule-based math reward: final-answer extraction plus equivalence (selftrain.answers).

Runs on the main thread: math_verify's timeouts use signal.alarm.
"""
from __future__ import annotations

from selftrain.answers import score_math
from selftrain.errors import InputError


class MathReward:
    name = "rule_based/math"
    verifiable = True

    def __init__(self, config=None):
        self.config = config

    def score(self, records: list[dict]) -> list[dict]:
        results = []
        for record in records:
            expected = record.get("metadata", {}).get("expected_answer")
            if expected is None:
                raise InputError(f"record {record.get('id')}: metadata.expected_answer: missing (math scoring needs it)")
            results.append(score_math(record["response"], expected))
        return results
