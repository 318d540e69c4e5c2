"""Rule-based yes/no reward: which yes or no a reply gives, what counts as no answer, and scoring."""
import pytest

from selftrain.config import Config, RewardConfig
from selftrain.data import needs_expected_answer, required_metadata
from selftrain.errors import InputError
from selftrain.metrics import response_signals
from selftrain.rewards import get_reward, is_verifiable
from selftrain.rewards.yesno import YesNoReward, answer_line, bold_answer, extract_yes_no, first_word

TEACHER_YES = """## Teaching Analysis
The student answered "No" and asked whether the ship was named after a World War II carrier.

## Step-by-Step Reasoning
1. USS Iwo Jima recovered Apollo 13.
2. It was named after the Battle of Iwo Jima, in World War II.

## Final Assessment
Based on this analysis, the answer is: **YES**"""

DRAFT_NO = """Answer: No - hamsters are too small to matter as food.
Questions: Do any predators eat hamsters? Are hamsters prey animals?"""


@pytest.mark.parametrize("text, expected", [
    # the seed's sample generations
    ("No, the ship that", "no"),
    ("No, the tibia", "no"),
    ("To determine whether the", None),
    # Track A replies
    ("Yes", "yes"), ("yes.", "yes"), ("No", "no"), ("  NO!", "no"), ("Yes, because 17 * 4 = 68.", "yes"),
    ("**No**, it is not.", "no"), ('"Yes"', "yes"),
    ("Nope", None), ("Not really.", None), ("Nobody knows.", None), ("Yesterday it was.", None), ("", None),
    ("I think yes.", None),  # the first word decides, not a later one
    # "the answer is ..." phrases (the embedded model's drafts), all agreeing
    ("The answer is no.", "no"), ("The answer to this question is yes.", "yes"),
    ('The answer to this question is: "No, a 61-page book takes 8 days.', "no"),
    ("The answer is not yes.", None), ("The answer is yes at first, but the answer is no.", None),
    # both in the decisive part: no answer
    ("Yes/No", None), ("Yes or no, it depends.", None), ("No yes", None),
    # the teacher's final assessment
    (TEACHER_YES, "yes"),
    ("Based on this analysis, the answer is: **NO**", "no"),
    ("the answer is: **[YES]**", "yes"), ("**yes.**", "yes"),
    ("First I thought **NO**.\nThen: the answer is **YES**", "yes"),  # the last one wins
    ("Answer: No - x\n...\nFinal Assessment: **YES**", "yes"),  # the teacher format outranks an answer line
    ("the answer is: **YES** or **NO**", None),
    ("the answer is: **[YES/NO]**", None),  # the template copied unfilled
    # the draft format
    (DRAFT_NO, "no"),
    ("Answer: Yes - 17 * 4 = 68 is more than 60\nQuestions: What is 17 * 4?", "yes"),
    ("Let me think.\nAnswer: no", "no"),
    ("Answer: Yes - at first\nAnswer: No - after checking", "no"),  # the last line wins
    ("**Answer:** Yes, since 68 > 60", "yes"),
    ("Final answer: no", "no"),
    ("Answer:\nYes - on the next line", "yes"),
    ("Answer: <Yes/No> - <brief reasoning>", None),  # the template copied unfilled
    ("Answer: maybe - unclear\nYes", None),  # an answer line that says neither is no answer
    ("Yes. Answer: No", "yes"),  # "Answer:" inside a line is not an answer line
])
def test_extract_yes_no(text, expected):
    assert extract_yes_no(text) == expected


def test_the_parts_on_their_own():
    assert bold_answer(TEACHER_YES) == "yes" and bold_answer(DRAFT_NO) is None
    assert answer_line(DRAFT_NO) == (True, "no") and answer_line("No, it is not.") == (False, None)
    assert answer_line("Answer: Perhaps") == (True, None)
    assert first_word(DRAFT_NO) is None and first_word("No, the ship that") == "no"
    assert extract_yes_no(None) is None


def reward(rule_type="yesno"):
    return get_reward(Config(reward_config=RewardConfig(rule_type=rule_type)))


def record(response, expected="yes", id="r1"):
    return {"id": id, "prompt_id": "p1", "prompt": "Is 17 * 4 more than 60?", "response": response,
            "metadata": {"expected_answer": expected}}


def test_registered_and_verifiable():
    r = reward()
    assert isinstance(r, YesNoReward) and r.verifiable and is_verifiable(r.config)
    config = Config(reward_config=RewardConfig(rule_type="yesno"))
    assert required_metadata(config) == ("expected_answer",) and needs_expected_answer(config)


def test_scores_correct_wrong_and_no_answer():
    rows = [record("Yes", "yes"), record("No, it is less.", "yes"), record("To determine whether the", "no"),
            record(DRAFT_NO, "no"), record(TEACHER_YES, "No")]
    results = reward().score(rows)
    assert results == [
        {"reward_score": 1.0, "is_correct": True, "answer_found": True, "predicted": "yes"},
        {"reward_score": 0.0, "is_correct": False, "answer_found": True, "predicted": "no"},
        {"reward_score": 0.0, "is_correct": False, "answer_found": False, "predicted": None},
        {"reward_score": 1.0, "is_correct": True, "answer_found": True, "predicted": "no"},
        {"reward_score": 0.0, "is_correct": False, "answer_found": True, "predicted": "yes"},
    ]
    # the "no answer" figure the judge and the report show
    scored = [dict(row, **result) for row, result in zip(rows, results)]
    assert response_signals(scored)["no_answer_rate"] == 0.2


@pytest.mark.parametrize("metadata, problem", [
    ({}, "metadata.expected_answer: missing (yes/no scoring needs it)"),
    ({"expected_answer": "maybe"}, "metadata.expected_answer: expected 'yes' or 'no', got 'maybe'"),
    ({"expected_answer": True}, "metadata.expected_answer: expected 'yes' or 'no', got True"),
])
def test_bad_expected_answer(metadata, problem):
    bad = dict(record("Yes"), metadata=metadata, id="bad")
    assert YesNoReward.check_record(bad) == problem
    assert YesNoReward.check_record(record("Yes", " Yes ")) is None
    with pytest.raises(InputError, match=rf"^record bad: {problem.replace('(', '[(]').replace(')', '[)]')}$"):
        reward().score([record("Yes"), bad])


def test_summarize_shows_a_model_that_always_says_no():
    rows = [record("No", "yes"), record("No", "yes"), record("No", "no"), record("No", "no")]
    scored = [dict(row, **result) for row, result in zip(rows, reward().score(rows))]
    assert YesNoReward.summarize(scored) == {"accuracy_yes": 0.0, "predicted_yes": 0.0,
                                             "accuracy_no": 1.0, "predicted_no": 1.0}
    assert YesNoReward.summarize([]) == {"accuracy_yes": None, "predicted_yes": 0.0,
                                         "accuracy_no": None, "predicted_no": 0.0}
