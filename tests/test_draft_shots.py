"""Worked drafts before the student's draft prompt (`distill.draft_shots`, selftrain/distill.py), without a model:
the shots are dev questions only, a seeded choice alternating yes / no among those with facts and a
decomposition; their worked text is the seed's draft format; the draft prompt is then a chat of shot turns
ending in the question's own prompt, and with no shots it is today's single turn byte for byte; too few
usable dev questions is one line naming the keys."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from selftrain.config import load_config
from selftrain.distill import (DRAFT_INSTRUCTION, draft_answer, draft_record, draft_shots, expected, questions,
                               worked_draft)
from selftrain.errors import InputError
from selftrain.prompts import PromptSpec, build_messages, render_prompt
from selftrain.question_quality import clarifying_questions
from selftrain.stages.drafts import draft_jobs

DISTILL = {"method": "distill", "reward_config": {"type": "rule_based", "rule_type": "yesno"},
           "system_prompt": "Be careful.", "use_chat_template": False}
SUM = {"id": "s1", "prompt": "Is 18 + 24 more than 43?",
       "metadata": {"expected_answer": "no", "facts": ["18 + 24 = 42", "42 is not more than 43."],
                    "decomposition": ["What is 18 + 24?", "Is 42 more than 43?"]}}


def row(qid: str, answer: bool, facts=True, decomposition=True) -> dict:
    """A StrategyQA row; `facts` / `decomposition` False: the row has none."""
    out = {"qid": qid, "question": f"Is {qid} true?", "answer": answer}
    if facts:
        out["facts"] = [f"{qid} is a fact"]
    if decomposition:
        out["decomposition"] = [f"What is {qid}", f"Is {qid} so?"]
    return out


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A StrategyQA folder: 6 train and 4 test questions, 10 dev ones of which 6 have facts and a decomposition."""
    splits = {"train": [row(f"train{i}", i % 2 == 0) for i in range(6)],
              "test": [row(f"test{i}", i % 2 == 0) for i in range(4)],
              "dev": [row(f"dev{i}", i % 2 == 0) for i in range(6)]
              + [row("nofacts0", True, facts=False), row("nofacts1", False, facts=False),
                 row("nodecomp0", True, decomposition=False), row("nodecomp1", False, decomposition=False)]}
    for split, rows in splits.items():
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def config(dataset: Path, shots: int, seed: int = 0):
    return load_config(None, {**DISTILL, "seed": seed, "distill": {"dataset": str(dataset), "draft_shots": shots}})


def test_shots_are_dev_questions_with_facts_and_decomposition_alternating_yes_no_and_seeded(dataset):
    usable = {f"dev{i}" for i in range(6)}
    for seed in range(8):
        shots = draft_shots(config(dataset, 6, seed))
        assert {s["id"] for s in shots} == usable  # all six: never train, test, or a row without facts
        truths = [expected(s) for s in shots]
        assert all(a != b for a, b in zip(truths, truths[1:]))  # yes, no, yes, ... or no, yes, no, ...
        assert shots == draft_shots(config(dataset, 6, seed))  # the same shots every stage of the run
    picks = [tuple(s["id"] for s in draft_shots(config(dataset, 3, seed))) for seed in range(8)]
    assert len(set(picks)) > 1 and all(set(p) <= usable for p in picks)  # a seeded choice, not the file's order
    assert not {s["id"] for s in draft_shots(config(dataset, 3))} & {r["id"] for split in ("train", "test")
                                                                   for r in questions(config(dataset, 3), split)}


def test_too_few_usable_dev_questions_is_one_line_naming_the_keys(dataset):
    with pytest.raises(InputError) as err:
        draft_shots(config(dataset, 7))  # 3 yes and 3 no usable: 7 alternating needs 4 of one
    assert "distill.draft_shots 7" in str(err.value) and "task.n_dev" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="distill.draft_shots: -1 must be >= 0"):
        config(dataset, -1)


def test_the_worked_draft_is_the_seeds_format_from_the_truth_first_fact_and_decomposition():
    assert worked_draft(SUM) == "Answer: No - 18 + 24 = 42.\nQuestions: What is 18 + 24? Is 42 more than 43?"
    strategyqa = {"id": "h", "prompt": "Do hamsters provide food for any animals?",
                  "metadata": {"expected_answer": "yes", "facts": ["Hamsters are prey animals. ", "Prey are food."],
                               "decomposition": ["What type of animal are hamsters", "Do prey animals feed others?"]}}
    text = worked_draft(strategyqa)
    assert text == ("Answer: Yes - Hamsters are prey animals.\n"
                    "Questions: What type of animal are hamsters? Do prey animals feed others?")
    for record in (SUM, strategyqa):  # read back as a draft is read: its answer and its Questions: line
        assert draft_answer(worked_draft(record)) == expected(record)
        assert clarifying_questions(worked_draft(record)) == worked_draft(record).split("Questions: ")[1]


def test_with_shots_the_draft_prompt_is_worked_turns_then_the_question():
    other = {"id": "s2", "prompt": "Is 50 - 9 less than 42?",
             "metadata": {"expected_answer": "yes", "facts": ["50 - 9 = 41", "41 is less than 42."],
                          "decomposition": ["What is 50 - 9?", "Is 41 less than 42?"]}}
    asked = {"id": "q", "prompt": "Is 3 + 4 more than 6?", "metadata": {"expected_answer": "yes"}}
    record = draft_record(asked, [SUM, other])
    turns = record["messages"]
    assert [m["role"] for m in turns] == ["user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in turns] == [f"{SUM['prompt']}\n\n{DRAFT_INSTRUCTION}", worked_draft(SUM),
                                             f"{other['prompt']}\n\n{DRAFT_INSTRUCTION}", worked_draft(other),
                                             f"{asked['prompt']}\n\n{DRAFT_INSTRUCTION}"]
    spec = PromptSpec("Be careful.", 0, "", False)
    assert build_messages(record, spec) == [{"role": "system", "content": "Be careful."}] + turns
    text = render_prompt(None, record, spec)
    assert text.startswith(f"Be careful.\n\nQuestion: {SUM['prompt']}\n")
    assert f"Solution: {worked_draft(other)}\n\nQuestion: {asked['prompt']}\n\n" in text and text.endswith("Solution:")


def test_without_shots_the_draft_prompt_is_the_single_turn_it_was(dataset):
    asked = {"id": "q", "prompt": "Is 3 + 4 more than 6?", "metadata": {"expected_answer": "yes"}}
    assert draft_shots(config(dataset, 0)) == []
    assert draft_record(asked, []) == {"id": "q", "prompt": "Is 3 + 4 more than 6?\n\nAnswer in exactly two lines:\n"
                                                            "Answer: <Yes or No> - <one short reason>\nQuestions: <a "
                                                            "focused question you would check>? <your key "
                                                            "uncertainty>?", "metadata": {"expected_answer": "yes"}}
    spec = PromptSpec("Be careful.", 0, "", False)
    assert render_prompt(None, draft_record(asked, []), spec) == (
        "Be careful.\n\nQuestion: Is 3 + 4 more than 6?\n\nAnswer in exactly two lines:\nAnswer: <Yes or No> - "
        "<one short reason>\nQuestions: <a focused question you would check>? <your key uncertainty>?\nSolution:")


def test_draft_jobs_show_every_question_the_same_shots(dataset):
    cfg = config(dataset, 2)
    shots = draft_shots(cfg)
    tests = questions(cfg, "test")
    jobs = draft_jobs(cfg, "student", {"test": tests}, None, shots)
    assert [j["id"] for j in jobs] == [t["id"] for t in tests]
    for job, test in zip(jobs, tests):
        assert [m["content"] for m in job["_messages"][1:5]] == [m["content"] for m in draft_record(test, shots)
                                                                  ["messages"][:4]]
        assert job["_messages"][-1]["content"].startswith(test["prompt"])
        assert job["prompt_text"] == render_prompt(None, draft_record(test, shots), PromptSpec.from_config(cfg))
