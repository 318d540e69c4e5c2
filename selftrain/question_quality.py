"""The question-quality win-rate (seed 003's validation table: "judge usefulness of clarifiers, +10% win-rate").

A student draft ends with `Questions: <focused question>? <key uncertainty>?`: what the student would
check before answering. For each test question whose draft has that line both before training (the
base student's draft) and after (the trained model's draft of the same question, same prompt), the
teacher is asked which set of questions would help more to answer the question, twice: once with
the "before" set as A, once with it as B. Only the two sets of questions are shown (not the drafts'
answers), so the judge rates the questions, not the verdicts.

Verdict (`parse_verdict`): the judge's last non-empty line must read `Better: A` or `Better: B`
(markdown `*`, `_`, `#` around it and a final "." are allowed; the label and the letter in any case).
Anything else, a reply cut off at the token limit included, is unparsable: counted, never guessed.

Per question (`outcome`): `after` (both orders prefer the after set), `before` (both prefer the
before set), `inconsistent` (the orders disagree: the judge followed the position, not the text),
`unparsable` (at least one verdict missing). Questions not judged: `no_questions` (no `Questions:`
line before, after or both) and `identical` (the same questions on both sides: nothing to prefer).

Summary (`summarize`): win-rate of after over before = (after + inconsistent / 2) / decided, where
decided = after + before + inconsistent, beside its chance level 0.5; position consistency =
(after + before) / decided; the raw counts; the share of parsed verdicts that chose A (a judge that
always says A: 1.0, every question inconsistent, win-rate exactly 0.5). None where nothing was
decided: no figure is made up.
"""
from __future__ import annotations

import re

CHANCE = 0.5  # a judge that cannot tell the sets apart (or answers by position) wins half
SEED_CRITERION = 0.10  # the seed's success criterion: "+10% win-rate", read as 10 points above chance
ORDERS = ("before_A", "after_A")  # which side is shown as set A; each question is judged in both orders
OUTCOMES = ("after", "before", "inconsistent", "unparsable")

JUDGE_INSTRUCTION = (
    "Two students were asked the same yes/no question. Before answering, each wrote the clarifying questions "
    "it would check. Judge which set of clarifying questions would help more to answer the question correctly: "
    "questions that ask for the facts or the steps the answer depends on help; vague, off-topic or repeated "
    "questions do not.\n\n"
    "Question: {question}\n\n"
    "Set A: {a}\n\n"
    "Set B: {b}\n\n"
    "Give one or two sentences of reasons, then end with a last line that is exactly \"Better: A\" or \"Better: B\"."
)

_SP = r"[^\S\n]*"  # spaces within one line
# `Questions:` opening a line (after list or quote marks, in markdown bold or not); the questions are the rest of it
_QUESTIONS_LINE = re.compile(rf"^{_SP}[*_#>-]*{_SP}questions{_SP}[*_]*:[*_]*{_SP}(.*?)[*_]*{_SP}$", re.I | re.M)
_VERDICT_LINE = re.compile(r"^[*_#\s]*better[*_\s]*:[*_\s]*([ab])[*_\s]*\.?[*_\s]*$", re.I)


def clarifying_questions(draft: str) -> str | None:
    """The text of a draft's first `Questions:` line (markdown marks stripped), None when it has none
    or the line is empty."""
    m = _QUESTIONS_LINE.search(draft)
    return m.group(1) if m and m.group(1) else None


def judge_record(question: dict, set_a: str, set_b: str) -> dict:
    """The judging prompt as a record for the one prompt builder (prompts.render_prompt / build_messages)."""
    text = JUDGE_INSTRUCTION.format(question=question["prompt"], a=set_a, b=set_b)
    return {"id": question["id"], "prompt": text, "metadata": question.get("metadata", {})}


def judge_records(question: dict, before: str, after: str) -> dict[str, dict]:
    """The two judging prompts of one question, keyed by order: the same two sets, positions swapped."""
    return {"before_A": judge_record(question, before, after), "after_A": judge_record(question, after, before)}


def parse_verdict(text: str, finish_reason: str = "stop") -> str | None:
    """"A" or "B" from the judge's final line, None when that line is not a verdict or the reply was cut off."""
    if finish_reason != "stop":
        return None
    lines = [line for line in text.splitlines() if line.strip()]
    m = _VERDICT_LINE.match(lines[-1]) if lines else None
    return m.group(1).upper() if m else None


def preferred(order: str, verdict: str | None) -> str | None:
    """Which side ("before" / "after") a verdict given in `order` prefers; None for no verdict."""
    if verdict is None:
        return None
    if order not in ORDERS or verdict not in ("A", "B"):
        raise ValueError(f"order {order!r} / verdict {verdict!r}: expected one of {ORDERS} and A or B")
    shown_as_a = order.removesuffix("_A")
    return shown_as_a if verdict == "A" else ("after" if shown_as_a == "before" else "before")


def outcome(verdicts: dict[str, str | None]) -> str:
    """One question's outcome from its two verdicts ({order: "A" / "B" / None})."""
    sides = [preferred(order, verdicts.get(order)) for order in ORDERS]
    if None in sides:
        return "unparsable"
    return sides[0] if sides[0] == sides[1] else "inconsistent"


def summarize(outcomes: list[str], verdicts: list[str | None], not_judged: dict[str, int]) -> dict:
    """The win-rate figures from the judged questions' outcomes, every verdict given (None: unparsable)
    and the counts of questions not judged ({"no_questions_before": n, ...})."""
    unknown = set(outcomes) - set(OUTCOMES)
    if unknown:
        raise ValueError(f"outcomes {sorted(unknown)}: expected {', '.join(OUTCOMES)}")
    after, before, inconsistent = outcomes.count("after"), outcomes.count("before"), outcomes.count("inconsistent")
    decided = after + before + inconsistent
    win_rate = (after + inconsistent / 2) / decided if decided else None
    margin = round(win_rate - CHANCE, 4) if decided else None
    parsed = [v for v in verdicts if v is not None]
    return {"judged": len(outcomes), "after_wins": after, "before_wins": before, "inconsistent": inconsistent,
            "unparsable": outcomes.count("unparsable"), "decided": decided,
            "win_rate": _round(win_rate), "chance": CHANCE, "win_rate_minus_chance": margin,
            "meets_seed_criterion": margin >= SEED_CRITERION if decided else None,
            "position_consistency": _round((after + before) / decided) if decided else None,
            "verdicts": len(verdicts), "verdicts_unparsable": len(verdicts) - len(parsed),
            "verdict_a_share": _round(parsed.count("A") / len(parsed)) if parsed else None,
            **not_judged}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
