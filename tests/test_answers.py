"""Tests for selftrain.answers: extraction, normalisation, matching, scoring."""

import threading

import pytest

from selftrain.answers import (
    NO_ANSWER,
    answers_match,
    extract_answer,
    normalize_number,
    score_math,
)


# --- normalize_number -------------------------------------------------------

@pytest.mark.parametrize(
    "raw, expected",
    [
        ("1,234", "1234"),
        ("1,234,567", "1234567"),
        ("$5.50", "5.5"),
        ("50%", "50"),
        ("-3", "-3"),
        ("−3", "-3"),  # unicode minus
        ("+5", "5"),
        ("3/4", "3/4"),
        ("-3/4", "-3/4"),
        ("2.0", "2"),
        ("2.50", "2.5"),
        (" 7. ", "7"),
        ("007", "7"),
        ("-0", "0"),
        ("-$5", "-5"),
        ("$-5", "-5"),
        (".5", "0.5"),
        ("$12$", "12"),  # LaTeX inline math, not a dollar sign
        ("\\$18.90", "18.9"),
        ("12\\%", "12"),
        ("1{,}000", "1000"),
    ],
)
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


@pytest.mark.parametrize("raw", ["abc", "3,4", "1,2345", "12 apples", "3/0", "", "\\frac{1}{2}", "5-3"])
def test_normalize_number_rejects_non_numbers(raw):
    assert normalize_number(raw) is None


# --- extract_answer: priority 1, the "Answer:" line -------------------------

@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Some work 3 + 4.\nAnswer: 42", "42"),
        ("answer: 42.", "42"),
        ("**Answer:** 42", "42"),
        ("**Answer: 42**", "42"),
        ("Final answer: $1,234", "1234"),
        ("So the answer is 17 apples.", "17"),
        ("The final answer is $-3.50$.", "-3.5"),
        ("Final Answer: The final answer is $12$. I hope it is correct.", "12"),
        ("Answer: 5 + 7 = 12", "12"),
        ("Answer: x = 3", "3"),
        ("Answer: 3/4 of the cake", "3/4"),
        ("Answer: 12 (twelve)", "12"),
        ("Answer: 50%", "50"),
        ("Answer: \\boxed{9}", "9"),
        ("Answer: 12 \\text{ apples}", "12"),
        ("Final Answer\n42", "42"),  # heading with the answer on the next line
        # the last marker wins, even over a later \boxed or ####
        ("Answer: 1\nlater\nAnswer: 2\n\\boxed{3}\n#### 4", "2"),
    ],
)
def test_answer_line(reply, expected):
    assert extract_answer(reply) == expected


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Answer: Paris.", "Paris"),
        ("Answer: \\frac{1}{2}", "\\frac{1}{2}"),
        ("Answer: \\sqrt{2}", "\\sqrt{2}"),  # not reduced to "2"
        ("Answer: 2x", "2x"),  # a variable, not "2"
        ("The final answer is $\\boxed{\\frac{1}{2}}$. I hope it is correct.", "\\frac{1}{2}"),
    ],
)
def test_answer_line_non_numeric_kept_as_text(reply, expected):
    assert extract_answer(reply) == expected


@pytest.mark.parametrize(
    "reply, raw",
    [
        ("Answer: 12 or 13", "12 or 13"),
        ("Answer: 12, 13", "12, 13"),
        ("Answer: either 7 or 8.", "either 7 or 8"),
        ("Answer: x = 3, y = 4", "x = 3, y = 4"),  # a list, not an equation
    ],
)
def test_answer_line_hedge_kept_raw(reply, raw):
    assert extract_answer(reply) == raw


def test_answer_marker_mid_prose_is_not_taken():
    # "answer:" not at the start of a line is prose; the last number is used.
    assert extract_answer("Let me check my answer: it works. Total 8") == "8"


def test_empty_answer_marker_falls_through():
    assert extract_answer("The total is 31.\nAnswer:") == "31"


# --- extract_answer: priorities 2-5 -----------------------------------------

@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
        ("#### 1,234", "1234"),
        ("#### -5", "-5"),
        ("#### 72\n\\boxed{5}", "72"),  # #### beats \boxed
        ("#### Step 3\nso we get 5", "5"),  # a markdown heading is not GSM8K
    ],
)
def test_gsm8k_marker(reply, expected):
    assert extract_answer(reply) == expected


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("so \\boxed{14} and then 20", "14"),  # \boxed beats the last number
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("$\\boxed{\\frac{\\sqrt{3}}{2}}$", "\\frac{\\sqrt{3}}{2}"),  # nested braces
        ("\\boxed{1,000}", "1000"),
        ("\\boxed{x = 5}", "5"),
        ("\\boxed{7} then \\boxed{8", "7"),  # clipped box is skipped
    ],
)
def test_boxed(reply, expected):
    assert extract_answer(reply) == expected


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("She has 3 apples and buys 4, so 7 in total.", "7"),
        ("The population is 1,234,567 people", "1234567"),
        ("It costs $5.50.", "5.5"),
        ("A discount of 50%", "50"),
        ("The temperature is −7 degrees", "-7"),
        ("x = -3", "-3"),
        ("10-3", "3"),  # binary minus is not a sign
        ("3/4 of them", "3/4"),
        ("values 3,4", "4"),  # not a thousands group
        ("so the total is 2.50", "2.5"),
        ("the sum keeps growing: 12, 13, 14", "14"),
        ("Adding everything up we get 1,2", "2"),
        ("Step 1: 20 + 22 = 42", "42"),  # clipped reply: last token still counts
    ],
)
def test_last_number(reply, expected):
    assert extract_answer(reply) == expected


@pytest.mark.parametrize("reply", ["", "   ", "I am not sure.", "Answer:", "\\boxed{}"])
def test_no_answer(reply):
    assert extract_answer(reply) is NO_ANSWER is None


# --- answers_match ----------------------------------------------------------

@pytest.mark.parametrize(
    "predicted, expected, result",
    [
        ("1234", "1,234", True),
        ("5.5", "$5.50", True),
        ("50", "50%", True),
        ("-3", "−3", True),
        ("3", "-3", False),
        ("6/8", "3/4", True),  # exact rational comparison
        ("0.75", "3/4", True),
        ("1/3", "0.33", False),
        ("1/3", "0.3333333333", False),
        ("2", "2.0", True),
        ("12", "13", False),
        (None, "12", False),
    ],
)
def test_numeric_match(predicted, expected, result):
    assert answers_match(predicted, expected) is result


@pytest.mark.parametrize(
    "predicted, expected, result",
    [
        ("\\frac{1}{2}", "0.5", True),
        ("0.5", "\\frac{1}{2}", True),
        ("\\frac{1}{3}", "0.33", False),
        ("x=3", "3", True),
        ("\\dfrac{3}{4}", "3/4", True),
        ("2^{10}", "1024", True),
        ("\\sqrt{2}", "\\sqrt{2}", True),
        ("\\sqrt{3}", "\\sqrt{2}", False),
        ("Paris", "paris", True),
    ],
)
def test_symbolic_match(predicted, expected, result):
    assert answers_match(predicted, expected) is result


@pytest.mark.parametrize(
    "hedge, expected",
    [
        ("12 or 13", "12"),
        ("12 or 13", "13"),
        ("12, 13", "12"),
        ("either 7 or 8", "8"),
        ("20 apples cost $5", "5"),
        ("\\frac{1}{2} or \\frac{1}{3}", "\\frac{1}{2}"),
        ("x = 3, y = 4", "4"),
    ],
)
def test_hedge_never_matches(hedge, expected):
    assert answers_match(hedge, expected) is False


def test_list_answer_matches_list_expected():
    # the hedge rule applies only when the expected answer is not itself a list
    assert answers_match("(1, 2)", "(1,2)") is True


def _run_in_thread(fn):
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - report whatever happened
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    return box


def test_symbolic_path_in_thread_raises():
    box = _run_in_thread(lambda: answers_match("\\frac{1}{2}", "0.5"))
    assert "value" not in box, f"returned {box.get('value')!r} instead of raising"
    assert isinstance(box["error"], RuntimeError)
    assert "main thread" in str(box["error"])


def test_numeric_path_in_thread_works():
    # plain numbers never touch math_verify, so threads are fine
    assert _run_in_thread(lambda: answers_match("1,234", "1234")) == {"value": True}


# --- score_math -------------------------------------------------------------

def test_score_correct():
    reply = "She earns 12 * 100 = 1,200 dollars.\nAnswer: $1,200"
    assert score_math(reply, "1200") == {
        "predicted": "1200",
        "is_correct": True,
        "reward_score": 1.0,
        "answer_found": True,
    }


def test_score_wrong():
    assert score_math("#### 41", "42") == {
        "predicted": "41",
        "is_correct": False,
        "reward_score": 0.0,
        "answer_found": True,
    }


def test_score_hedge():
    assert score_math("It is 12 or 13.\nAnswer: 12 or 13", "12") == {
        "predicted": "12 or 13",
        "is_correct": False,
        "reward_score": 0.0,
        "answer_found": True,
    }


def test_score_equation_answer():
    result = score_math("Answer: 5 + 7 = 12", "12")
    assert result["predicted"] == "12"
    assert result["is_correct"] is True
    assert result["reward_score"] == 1.0


def test_score_no_answer():
    assert score_math("I cannot solve this.", "12") == {
        "predicted": None,
        "is_correct": False,
        "reward_score": 0.0,
        "answer_found": False,
    }


def test_score_symbolic():
    result = score_math("Thus $\\boxed{\\frac{1}{2}}$", "0.5")
    assert result == {
        "predicted": "\\frac{1}{2}",
        "is_correct": True,
        "reward_score": 1.0,
        "answer_found": True,
    }


# --- the math reward on samples whose expected answer is a number (seed 000 allows it) ---------

def math_record(expected, response="Answer: 12", id="s1"):
    return {"id": id, "prompt_id": "p", "response": response, "metadata": {"expected_answer": expected}}


@pytest.mark.parametrize("expected, response, correct", [
    (12, "Answer: 12", True), (12.0, "Answer: 12", True), (12, "Answer: 12.00", True), (0.5, "Answer: 1/2", True),
    (1e-07, "Answer: 0.0000001", True), (-3, "Answer: -3", True), (12, "Answer: 13", False), ("12", "Answer: 12", True),
])
def test_math_reward_compares_numeric_expected_answers_as_numbers(expected, response, correct):
    from selftrain.rewards.math import MathReward

    (result,) = MathReward().score([math_record(expected, response)])
    assert result["is_correct"] is correct
    assert MathReward.check_record(math_record(expected)) is None


@pytest.mark.parametrize("expected", [float("nan"), float("inf"), True, None, [12]])
def test_math_reward_refuses_an_unusable_expected_answer(expected):
    from selftrain.errors import InputError
    from selftrain.rewards.math import MathReward

    problem = MathReward.check_record(math_record(expected))
    assert problem.startswith("metadata.expected_answer: expected a string or")
    with pytest.raises(InputError, match=r"^record s1: metadata.expected_answer: expected a string or"):
        MathReward().score([math_record("12", id="s0"), math_record(expected)])
    assert MathReward.check_record({"id": "s", "response": "12"}) == (
        "metadata.expected_answer: missing (math scoring needs it)")
