"""Rule-based math reward: final-answer extraction plus equivalence (selftrain.answers).

`metadata.expected_answer` may be a string or a number, as in the seed-000
format; a number is compared by its exact decimal text (records.answer_text),
the same text a validated prompt record stores.

Runs on the main thread: math_verify's timeouts use signal.alarm.
"""
from __future__ import annotations

from selftrain.answers import score_math
from selftrain.errors import InputError
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


class MathReward:
    name = "rule_based/math"
    verifiable = True

    def __init__(self, config=None):
        self.config = config

    @staticmethod
    def check_record(record: dict) -> str | None:
        """What makes `record` unscorable, or None (the judge asks before it writes anything)."""
        try:
            _expected(record)
        except ValueError as exc:
            return str(exc)
        return None

    def score(self, records: list[dict]) -> list[dict]:
        expected = []
        for record in records:  # every input error before any scoring
            try:
                expected.append(_expected(record))
            except ValueError as exc:
                raise InputError(f"record {record.get('id')}: {exc}") from None
        return [score_math(record["response"], answer) for record, answer in zip(records, expected)]
