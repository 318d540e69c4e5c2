"""The shape every rule reward that reads one fact of each record shares (math's expected answer, ifeval's
instructions, yesno's truth): the fact is read by `fact(record)` (ValueError naming the field), every
record is checked before any is scored, and `check_record` answers the judge's question the same way."""
from __future__ import annotations

from selftrain.errors import InputError


class CheckedReward:
    verifiable = True

    def __init__(self, config=None):
        self.config = config

    @staticmethod
    def fact(record: dict):
        raise NotImplementedError

    def score_one(self, record: dict, fact) -> dict:
        raise NotImplementedError

    @classmethod
    def check_record(cls, record: dict) -> str | None:
        """What makes `record` unscorable, or None (the judge asks before it writes anything)."""
        try:
            cls.fact(record)
        except ValueError as exc:
            return str(exc)
        return None

    def score(self, records: list[dict]) -> list[dict]:
        facts = []
        for record in records:  # every input error before any scoring
            try:
                facts.append(self.fact(record))
            except ValueError as exc:
                raise InputError(f"record {record.get('id')}: {exc}") from None
        return [self.score_one(record, fact) for record, fact in zip(records, facts)]
