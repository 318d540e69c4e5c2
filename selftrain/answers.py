"""Rule-based scoring of math replies for the self-training (STaR) loop.

Known ways such scorers silently go wrong, and what this module does about them:

* Extraction that quietly scores 0 ("1,234" read as 1 and 234, a clipped tail,
  the wrong parser): numbers are matched with one regex that understands
  thousands groups, decimals, fractions, signs, `$` and `%`, and numeric answers
  are compared exactly as `Fraction`s without math_verify.
* math_verify times out through `signal.alarm`, which only works on the main
  thread; off it, every comparison fails and everything scores 0. We refuse
  loudly (RuntimeError) instead; worker processes are fine.
* Hedges ("12 or 13") scored as correct: a final answer that lists several
  different numbers never matches a single expected answer.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction

NO_ANSWER = None

# One number: optional sign, optional `$`, then a fraction, a comma-grouped or
# plain integer with optional decimals, or a bare ".5"; optional `%`.
# A sign only counts when it is not a binary operator ("10-3" is 10 and 3), and
# "1,234" groups only when every group has exactly three digits ("3,4" is 3 and 4).
_NUMBER = re.compile(
    r"(?P<sign>(?<![\w)\]}.])[-+−])?(?:\$(?P<sign2>[-−])?)?"
    r"(?P<body>\d+/\d+(?!\.?\d)"
    r"|(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
    r"|(?<!\d)\.\d+)"
    r"%?"
)
# Markers of an explicit final answer. "Answer:" must open its line (after
# markdown such as "**", "#", ">"), so prose like "check the answer: ok" is not
# taken; "the answer is" may sit anywhere in a line.
_ANSWER_MARKERS = (
    re.compile(r"^[\s#>*_\-]*(?:the\s+)?(?:final\s+)?answer\s*(?:is\s*)?(?:[:：]|$)", re.I),
    re.compile(r"\bthe\s+(?:final\s+)?answer\s+is\b\s*[:：]?", re.I),
)
_GSM8K = re.compile(r"####\s*(?=[-+−$\d.\\])(.*)")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# Words and separators that join alternatives in a hedged answer.
_CONNECTIVE = re.compile(r"\b(?:or|and|either|maybe|perhaps|possibly)\b|[,;]|\\lor\b|\\vee\b", re.I)
# Signs that the text around numbers is mathematics, not words or units:
# then "\sqrt{2}" must stay "\sqrt{2}" rather than become "2". A digit glued to
# a single letter ("2x") is a variable; "12cm" is a unit.
_MATH_CHARS = re.compile(r"[\\^_{}=+*×÷√≈<>|−-]")
_VARIABLE = re.compile(r"\d[a-zA-Z](?![a-zA-Z])")
_SENTENCE_END = re.compile(r"\.\s+(?=[A-Z])")
_TEXT_MACRO = re.compile(r"\\(?:text|textbf|mathrm|mbox|mathbf)\s*\{([^{}]*)\}")


def _prep(s: str) -> str:
    """Undo markdown/LaTeX decoration that hides plain numbers."""
    s = s.replace("**", "").replace("−", "-")
    s = _TEXT_MACRO.sub(r"\1", s)
    for old, new in (("\\$", "$"), ("\\%", "%"), ("{,}", ","), ("\\,", ""), ("\\!", "")):
        s = s.replace(old, new)
    return s


def _canonical(m: re.Match) -> str | None:
    """Canonical string of one `_NUMBER` match: no $ % commas, '2.50' -> '2.5'."""
    negative = bool(m["sign"] and m["sign"] in "-−") or bool(m["sign2"])
    body = m["body"].replace(",", "")
    if "/" in body:
        num, den = (int(x) for x in body.split("/"))
        if den == 0:
            return None
        text, zero = f"{num}/{den}", num == 0
    else:
        whole, _, frac = body.partition(".")
        whole, frac = whole.lstrip("0") or "0", frac.rstrip("0")
        text = f"{whole}.{frac}" if frac else whole
        zero = text == "0"
    return text if zero or not negative else "-" + text  # no "-0"


def _numbers(text: str) -> list[tuple[re.Match, str]]:
    found = ((m, _canonical(m)) for m in _NUMBER.finditer(text))
    return [(m, c) for m, c in found if c is not None]


def normalize_number(s: str) -> str | None:
    """'1,234' -> '1234', '$5.50' -> '5.5', '50%' -> '50', '-3' -> '-3', '3/4' -> '3/4', '2.0' -> '2', ' 7. ' -> '7'; None if not a number."""
    if not isinstance(s, str):
        return None
    s = _prep(s).strip().rstrip(".").strip()
    if len(s) > 2 and s.startswith("$") and s.endswith("$"):
        s = s[1:-1].strip()  # LaTeX inline math "$12$", not a dollar sign
    m = _NUMBER.fullmatch(s)
    return _canonical(m) if m else None


def _last_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{...} (nested braces allowed)."""
    for start in reversed([m.end() for m in _BOXED.finditer(text)]):
        depth = 1
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i]
    return None  # none, or all clipped before their closing brace


def _is_mathy(text: str) -> bool:
    return bool(_MATH_CHARS.search(_NUMBER.sub("", text)) or _VARIABLE.search(text))


def _distinct_values(nums: list[tuple[re.Match, str]]) -> set[Fraction]:
    return {Fraction(c) for _, c in nums}


def _finalize(text: str) -> str | None:
    """Turn the text of a stated answer into the answer string."""
    text = _prep(text)
    boxed = _last_boxed(text)
    if boxed is not None:
        text = boxed
    # "$12$. I hope it is correct." -> "$12$": later sentences are commentary.
    text = _SENTENCE_END.split(text, maxsplit=1)[0].strip().rstrip(".").strip()
    # "5 + 7 = 12" states 12; but "x = 3, y = 4" is a list, not an equation.
    if "=" in text and not _CONNECTIVE.search(_NUMBER.sub("", text)):
        text = text.rsplit("=", 1)[1].strip().rstrip(".").strip()
    if not text:
        return None
    nums = _numbers(text)
    if nums and len(_distinct_values(nums)) == 1 and not _is_mathy(text):
        return nums[-1][1]  # "12 apples", "$12$", "12 (twelve)" -> "12"
    # Several different numbers (a hedge such as "12 or 13"), or mathematics
    # such as "\frac{1}{2}", or a word: keep the text; answers_match decides.
    return text


def _from_answer_line(text: str) -> str | None:
    lines = text.splitlines()
    last = None  # (line index, end of marker) of the last marker in the reply
    for i, line in enumerate(lines):
        line = line.replace("**", "")
        for pattern in _ANSWER_MARKERS:
            for m in pattern.finditer(line):
                if last is None or (i, m.end()) > last:
                    last = (i, m.end())
    if last is None:
        return None
    i, end = last
    rest = lines[i].replace("**", "")[end:]
    if not rest.strip():  # "Final Answer:" with the answer on the next line
        rest = next((ln for ln in lines[i + 1 :] if ln.strip()), "")
    return _finalize(rest)


def extract_answer(text: str) -> str | None:
    """Final answer of a reply, normalised, or None when the reply states no answer."""
    if not isinstance(text, str) or not text.strip():
        return NO_ANSWER
    # Priority: "Answer:" line, then "#### N", then \boxed{}, then last number.
    # A marker that yields nothing (e.g. "Answer:" at a clipped tail) falls through.
    answer = _from_answer_line(text)
    if answer is not None:
        return answer
    gsm = _GSM8K.findall(text)
    if gsm and (answer := _finalize(gsm[-1])) is not None:
        return answer
    boxed = _last_boxed(text)
    if boxed is not None and (answer := _finalize(boxed)) is not None:
        return answer
    # Last number anywhere; a number at the very end of a clipped reply counts.
    nums = _numbers(_prep(text))
    return nums[-1][1] if nums else NO_ANSWER


def _is_hedge(text: str) -> bool:
    """Several different numbers offered as alternatives ("12 or 13", "12, 13",
    "20 apples cost $5"), as opposed to one expression like "\\frac{1}{2}"."""
    text = _prep(text)
    if len(_distinct_values(_numbers(text))) < 2:
        return False
    return bool(_CONNECTIVE.search(_NUMBER.sub("", text))) or not _is_mathy(text)


def _wrap_latex(s: str) -> str:
    # math_verify reads a whole expression only inside math delimiters:
    # bare "12 or 13" parses as 13, "$12 or 13$" as the set {12, 13}.
    return s if "$" in s or "\\boxed" in s else f"${s}$"


def _symbolic_match(predicted: str, expected: str) -> bool:
    if threading.current_thread() is not threading.main_thread():
        # math_verify's timeouts use signal.alarm, which only works on the main
        # thread; elsewhere it errors or scores 0. Use processes, not threads.
        raise RuntimeError(
            "answers_match needs math_verify for symbolic answers, which uses "
            "signal.alarm and only works on the main thread; score in the main "
            "thread or in worker processes, not in threads"
        )
    if " ".join(predicted.split()).lower() == " ".join(expected.split()).lower():
        return True  # word answers ("Paris") that math_verify cannot parse
    from math_verify import parse, verify  # imported lazily: it pulls in sympy

    gold, pred = parse(_wrap_latex(expected)), parse(_wrap_latex(predicted))
    return bool(gold and pred and verify(gold, pred))


def answers_match(predicted: str | None, expected: str) -> bool:
    """True when equal as numbers (exact rational comparison via fractions.Fraction for ints/decimals/fractions), else by math_verify (parse + verify) for symbolic answers like '\\frac{1}{2}' vs '0.5' or 'x=3' vs '3'. None -> False."""
    if predicted is None or expected is None:
        return False
    p, e = normalize_number(predicted), normalize_number(expected)
    if p is not None and e is not None:
        return Fraction(p) == Fraction(e)
    # A hedge never matches, unless the expected answer is itself a list.
    if _is_hedge(predicted) and not _is_hedge(expected):
        return False
    return _symbolic_match(predicted.strip(), expected.strip())


def score_math(response: str, expected: str) -> dict:
    """{'predicted': str|None, 'is_correct': bool, 'reward_score': 1.0 or 0.0, 'answer_found': bool}"""
    predicted = extract_answer(response)
    correct = answers_match(predicted, expected)
    return {
        "predicted": predicted,
        "is_correct": correct,
        "reward_score": 1.0 if correct else 0.0,
        "answer_found": predicted is not None,
    }
