"""Rule-based regex reward: the reply must match a pattern.

The pattern is `metadata.regex_pattern` of the record if present, else
`reward_config.regex_pattern`; a record with neither is an InputError. Python
`re` syntax; flags go inline ("(?i)", "(?s)"). `reward_config.regex_mode`:

    search     the pattern matches somewhere in the reply (default)
    fullmatch  the pattern matches the whole reply

Both look at the reply stripped of surrounding whitespace. Each distinct
pattern is compiled once; a bad one is an InputError naming where it came from.

Backtracking: `re` has no timeout, and a pattern with nested quantifiers such
as "(a+)+$" takes exponential time on some inputs. The replies are model output
(untrusted) but the pattern is yours: keep patterns linear (no nested or
overlapping repetition) when scoring long replies.

Result: reward_score and is_correct 1.0/True on a match, `predicted` the
matched text (None without a match), and answer_found False only for an empty
reply that does not match.
"""
from __future__ import annotations

import re

from selftrain.errors import InputError

MODES = ("search", "fullmatch")


class RegexReward:
    name = "rule_based/regex"
    verifiable = True

    def __init__(self, config):
        self.config = config
        rc = config.reward_config
        if rc.regex_mode not in MODES:
            raise InputError(f"reward_config.regex_mode: {rc.regex_mode!r} is not one of {', '.join(MODES)}")
        self.mode = rc.regex_mode
        self._compiled: dict[str, re.Pattern] = {}
        self.default_pattern = None
        if rc.regex_pattern:
            self.default_pattern = self._compile(rc.regex_pattern, "reward_config.regex_pattern")

    def score(self, records: list[dict]) -> list[dict]:
        patterns = [self._pattern_for(record) for record in records]  # every pattern checked before any match
        return [self._score_one(pattern, record["response"]) for pattern, record in zip(patterns, records)]

    def _score_one(self, pattern: re.Pattern, response: str) -> dict:
        text = response.strip()
        match = pattern.fullmatch(text) if self.mode == "fullmatch" else pattern.search(text)
        return {
            "reward_score": 1.0 if match else 0.0,
            "is_correct": match is not None,
            "answer_found": bool(text) or match is not None,
            "predicted": match.group(0) if match else None,
        }

    def _pattern_for(self, record: dict) -> re.Pattern:
        metadata = record.get("metadata") or {}
        if "regex_pattern" in metadata:
            where = f"record {record.get('id')}: metadata.regex_pattern"
            pattern = metadata["regex_pattern"]
            if not isinstance(pattern, str) or not pattern:
                raise InputError(f"{where}: expected a non-empty string, got {pattern!r}")
            return self._compile(pattern, where)
        if self.default_pattern is None:
            raise InputError(
                f"record {record.get('id')}: no regex pattern (set metadata.regex_pattern in the record "
                f"or reward_config.regex_pattern)"
            )
        return self.default_pattern

    def _compile(self, pattern: str, where: str) -> re.Pattern:
        if pattern not in self._compiled:
            try:
                self._compiled[pattern] = re.compile(pattern)
            except re.error as exc:
                raise InputError(f"{where}: bad regular expression {pattern!r}: {exc}") from None
        return self._compiled[pattern]
