"""Rule-based yes/no reward: the reply's final yes or no against `metadata.expected_answer` ("yes" / "no").

The answer is read from the first of these the reply has, and only from it:

  1. the teacher format's final assessment, `**YES**` / `**NO**` (any case, `**[YES]**` too);
     the last line holding one decides
  2. the draft format's `Answer: <Yes/No> - <brief reasoning>`; the last such line decides
  3. the reply's first word ("No, the ship that ..." is no; Track A replies are just "Yes" / "No")
  4. "the answer (to this question) is yes/no" phrases ("The answer is no." - how a small model drafts);
     all of them must agree

A decisive part that says both ("Yes/No", "**YES** or **NO**") or neither ("Answer: maybe",
"To determine whether the") is no answer: scored 0 and counted apart from wrong
(`answer_found` False), never guessed.

Result: reward_score 1.0 / 0.0, is_correct, answer_found, predicted ("yes" / "no" / None).
"""
from __future__ import annotations

import re

from selftrain.rewards.checked import CheckedReward

ANSWERS = ("yes", "no")

BOLD_VERDICT = re.compile(r"\*\*\s*\[?\s*(yes|no)\s*\]?\s*[.!]?\s*\*\*", re.I)
_ANSWER_LINE = re.compile(r"^[\s#>*_\-]*(?:final\s+)?answer\s*[:：]\s*(.*)$", re.I)
_WORD = re.compile(r"\b(yes|no)\b", re.I)
_ANSWER_IS = re.compile(r"\bthe answer(?: to (?:this|the) question)? is\W{0,3}(yes|no)\b", re.I)
# Where the decisive part of a line ends: the reasoning after " - ", a comma, a full stop, ...
_CLAUSE_END = re.compile(r"\s[-–—]\s|[,.;:!?()\n]")


def _one(words) -> str | None:
    """The single answer among `words`, or None when there are none or both."""
    found = {w.lower() for w in words}
    return found.pop() if len(found) == 1 else None


def bold_answer(text: str) -> str | None:
    """The last line with a bold `**YES**` / `**NO**`: its answer; None if there is none or that line has both."""
    lines = [line for line in text.splitlines() if BOLD_VERDICT.search(line)]
    return _one(BOLD_VERDICT.findall(lines[-1])) if lines else None


def answer_line(text: str) -> tuple[bool, str | None]:
    """(the reply has an `Answer:` line, the last one's yes/no or None)."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if m := _ANSWER_LINE.match(lines[i]):
            value = m.group(1).strip() or next((line.strip() for line in lines[i + 1:] if line.strip()), "")
            value = value.strip("*_ \t")
            return True, _one(_WORD.findall(_CLAUSE_END.split(value, maxsplit=1)[0]))
    return False, None


def first_word(text: str) -> str | None:
    """The reply's first clause's yes/no when its first word is one ("No, the ship" -> "no")."""
    clause = _CLAUSE_END.split(text.lstrip(" \t\n*_#>\"'`"), maxsplit=1)[0]
    if not re.match(r"(yes|no)\b", clause, re.I):
        return None
    return _one(_WORD.findall(clause))


def extract_yes_no(text: str) -> str | None:
    """The reply's final answer, "yes" or "no", or None (rules in the module docstring)."""
    if not isinstance(text, str):
        return None
    if BOLD_VERDICT.search(text):
        return bold_answer(text)
    has_line, answer = answer_line(text)
    if has_line:
        return answer
    word = first_word(text)
    return word if word is not None else _one(_ANSWER_IS.findall(text))


def expected_yes_no(record: dict) -> str:
    """The record's expected answer, "yes" or "no"; ValueError saying what is wrong with it."""
    metadata = record.get("metadata")
    if not isinstance(metadata, dict) or "expected_answer" not in metadata:
        raise ValueError("metadata.expected_answer: missing (yes/no scoring needs it)")
    value = metadata["expected_answer"]
    if not isinstance(value, str) or value.strip().lower() not in ANSWERS:
        raise ValueError(f"metadata.expected_answer: expected 'yes' or 'no', got {value!r}")
    return value.strip().lower()


class YesNoReward(CheckedReward):
    name = "rule_based/yesno"
    fact = staticmethod(expected_yes_no)

    def score_one(self, record: dict, answer: str) -> dict:
        predicted = extract_yes_no(record["response"])
        correct = predicted == answer
        return {"reward_score": 1.0 if correct else 0.0, "is_correct": correct,
                "answer_found": predicted is not None, "predicted": predicted}

    @staticmethod
    def summarize(rows: list[dict]) -> dict:
        """Per-class accuracy and the predicted-class shares of scored rows: a model that answers "no"
        to everything shows as predicted_no 1.0 with accuracy_yes 0.0."""
        out = {}
        for answer in ANSWERS:
            rows_of = [r for r in rows if str(r.get("metadata", {}).get("expected_answer", "")).lower() == answer]
            out[f"accuracy_{answer}"] = round(sum(bool(r["is_correct"]) for r in rows_of) / len(rows_of), 4) \
                if rows_of else None
            out[f"predicted_{answer}"] = round(sum(r.get("predicted") == answer for r in rows) / max(len(rows), 1), 4)
        return out
