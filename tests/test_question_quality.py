"""The question-quality win-rate (selftrain/question_quality.py, question_quality.py).

Pure parts: the `Questions:` line of a draft, the strict verdict parser, the position swap and the
figures from judges made by hand (always "A": every question inconsistent and exactly chance; one
that prefers the after set: 100%; unparsable verdicts counted, never decided). The stage through
real HTTP: the student and the judge are fake OpenAI-compatible servers on loopback
(tests/openai_fake.py, in a thread of this process, so every request is seen), and, marked slow,
llama.cpp's server launched by the stage as the judge.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from selftrain.errors import InputError
from selftrain.question_quality import (CHANCE, JUDGE_INSTRUCTION, ORDERS, clarifying_questions, judge_records, outcome,
                                        parse_verdict, preferred, summarize)
from selftrain.stages.question_quality import compare, results

from openai_fake import fake_servers, prompt_of  # tests/ is on sys.path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "distill_tiny.yaml"
TIMEOUT = 120


# --- parsing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("draft, questions", [
    ("Answer: Yes - 12 * 4 = 48\nQuestions: what is 12 * 4? is 48 more than 60?",
     "what is 12 * 4? is 48 more than 60?"),
    ("Answer: No - x\n**Questions:** what is 3 * 7?", "what is 3 * 7?"),
    ("Answer: No - x\n- questions : how many?  ", "how many?"),
    ("Answer: No - x\nQuestions:\n\nAnswer: yes", None),  # an empty line is no questions; the next line is not them
    ("Question: Is 12 * 4 more than 60?", None),  # the question echoed is not the seed's Questions: line
    ("The answer is no.", None),
    ("My Questions: what?", None),  # not at the start of a line
])
def test_the_questions_line_of_a_draft(draft, questions):
    assert clarifying_questions(draft) == questions


@pytest.mark.parametrize("reply, verdict", [
    ("Set A asks for the product.\nBetter: A", "A"),
    ("Set B asks for the product.\n\nBetter: B\n", "B"),
    ("**Better: B**", "B"),
    ("**Better:** A.", "A"),
    ("better: b", "B"),
    ("Better: A because it asks for the product", None),  # the verdict must be the whole line
    ("Better: A\nThough B is also fine.", None),  # ... and the last one
    ("Better: Set A", None),
    ("Better: A or B", None),
    ("Both sets are equally useful.", None),
    ("## Final Assessment\nBased on this analysis, the answer is: **YES**", None),  # a teacher reply is no verdict
    ("", None),
])
def test_a_verdict_is_the_final_better_line_and_nothing_else(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_a_reply_cut_off_at_the_token_limit_has_no_verdict():
    assert parse_verdict("Better: A", "stop") == "A"
    assert parse_verdict("Better: A", "length") is None


def test_preferred_reads_a_verdict_through_the_order_it_was_given_in():
    assert [preferred("before_A", v) for v in ("A", "B", None)] == ["before", "after", None]
    assert [preferred("after_A", v) for v in ("A", "B", None)] == ["after", "before", None]
    with pytest.raises(ValueError):
        preferred("before_A", "C")


# --- the position swap ---------------------------------------------------------------------------

QUESTION = {"id": "t0", "prompt": "Is 12 * 4 more than 60?", "metadata": {"expected_answer": "no"}}
BEFORE, AFTER = "is it big?", "what is 12 * 4? is 48 more than 60?"


def sets_of(prompt: str) -> tuple[str, str]:
    return (re.search(r"^Set A: (.*)$", prompt, re.M).group(1), re.search(r"^Set B: (.*)$", prompt, re.M).group(1))


def test_the_two_prompts_of_a_question_hold_the_same_sets_swapped():
    prompts = judge_records(QUESTION, BEFORE, AFTER)
    assert list(prompts) == list(ORDERS)
    assert sets_of(prompts["before_A"]["prompt"]) == (BEFORE, AFTER)
    assert sets_of(prompts["after_A"]["prompt"]) == (AFTER, BEFORE)
    for record in prompts.values():
        assert record["id"] == "t0" and "Question: Is 12 * 4 more than 60?" in record["prompt"]
        assert record["prompt"].endswith('exactly "Better: A" or "Better: B".')
    # the prompts differ only where the sets are: the same instruction in both orders
    assert prompts["before_A"]["prompt"].replace(BEFORE, "X").replace(AFTER, "Y") == \
        prompts["after_A"]["prompt"].replace(BEFORE, "Y").replace(AFTER, "X")
    assert JUDGE_INSTRUCTION.count("{a}") == JUDGE_INSTRUCTION.count("{b}") == 1


# --- the figures from hand-made judges -----------------------------------------------------------

def judged_by(judge, pairs) -> dict:
    """Every pair judged in both orders by `judge(prompt) -> reply`, through the stage's parser and figures."""
    outcomes, verdicts = [], []
    for question, before, after in pairs:
        given = {order: parse_verdict(judge(record["prompt"], before, after))
                 for order, record in judge_records(question, before, after).items()}
        outcomes.append(outcome(given))
        verdicts += list(given.values())
    return summarize(outcomes, verdicts, {})


PAIRS = [({"id": f"t{i}", "prompt": f"Is {i + 11} * 4 more than 60?"}, f"is {i} big?", f"what is {i + 11} * 4?")
         for i in range(6)]


def prefers_after(prompt, before, after):
    return "Better: A" if sets_of(prompt)[0] == after else "Better: B"


def test_a_judge_that_always_says_a_makes_every_question_inconsistent_and_the_win_rate_chance():
    s = judged_by(lambda prompt, before, after: "Both are fine.\nBetter: A", PAIRS)
    assert (s["after_wins"], s["before_wins"], s["inconsistent"], s["unparsable"]) == (0, 0, 6, 0)
    assert s["win_rate"] == CHANCE == 0.5 and s["position_consistency"] == 0.0 and s["verdict_a_share"] == 1.0
    assert s["win_rate_minus_chance"] == 0.0 and s["meets_seed_criterion"] is False


def test_a_judge_that_prefers_the_after_set_wins_every_question_in_both_orders():
    s = judged_by(prefers_after, PAIRS)
    assert (s["after_wins"], s["before_wins"], s["inconsistent"], s["decided"]) == (6, 0, 0, 6)
    assert s["win_rate"] == 1.0 and s["position_consistency"] == 1.0 and s["verdict_a_share"] == 0.5
    assert s["meets_seed_criterion"] is True
    flipped = judged_by(lambda prompt, b, a: "Better: B" if sets_of(prompt)[0] == a else "Better: A", PAIRS)
    assert flipped["win_rate"] == 0.0 and flipped["before_wins"] == 6 and flipped["position_consistency"] == 1.0


def test_unparsable_verdicts_are_counted_and_never_decided():
    def judge(prompt, before, after):
        if "Is 11 * 4" in prompt:
            return "I cannot tell."  # both orders
        if "Is 12 * 4" in prompt and sets_of(prompt)[0] == before:
            return "Better: maybe"  # one order only: the question is still unparsable
        return prefers_after(prompt, before, after)

    s = judged_by(judge, PAIRS)
    assert (s["judged"], s["unparsable"], s["after_wins"], s["decided"]) == (6, 2, 4, 4)
    assert s["verdicts"] == 12 and s["verdicts_unparsable"] == 3
    assert s["win_rate"] == 1.0  # over the decided questions only
    nothing = judged_by(lambda prompt, before, after: "I cannot tell.", PAIRS)
    assert nothing["decided"] == 0 and nothing["unparsable"] == 6
    assert nothing["win_rate"] is None and nothing["position_consistency"] is None  # not 0.5, not 0
    assert nothing["meets_seed_criterion"] is None and nothing["verdict_a_share"] is None


def test_the_win_rate_counts_an_inconsistent_question_as_half_and_the_seed_criterion_is_ten_points():
    outcomes = ["after"] * 2 + ["before"] * 1 + ["inconsistent"] * 2 + ["unparsable"]
    s = summarize(outcomes, ["A"] * 10 + [None, None], {"questions": 9})
    assert s["win_rate"] == round((2 + 1) / 5, 4) == 0.6 and s["decided"] == 5 and s["questions"] == 9
    assert s["win_rate_minus_chance"] == 0.1 and s["meets_seed_criterion"] is True  # exactly +10 points
    assert s["position_consistency"] == 0.6
    below = summarize(["after", "before", "inconsistent"], [], {})
    assert below["win_rate"] == 0.5 and below["meets_seed_criterion"] is False
    with pytest.raises(ValueError):
        summarize(["tie"], [], {})


def test_questions_without_a_questions_line_or_with_the_same_ones_are_counted_not_judged():
    tests = [{"id": f"t{i}", "prompt": f"Q{i}?", "response": r} for i, r in enumerate([
        "Answer: No - x\nQuestions: is it big?", "The answer is no.", "Answer: Yes\nQuestions: what is 3 * 4?",
        "Answer: Yes\nQuestions: A?"])]
    after = {"t0": "Answer: Yes\nQuestions: what is 11 * 4?", "t1": "Answer: Yes\nQuestions: what?",
             "t2": "Answer:  Yes\nQuestions:  What is 3 * 4? ", "t3": "Yes."}
    rows, pairs = compare(tests, {k: {"response": v} for k, v in after.items()})
    assert [r["outcome"] for r in rows] == [None, "no_questions", "identical", "no_questions"]
    assert [(q["id"], b, a) for q, b, a in pairs] == [("t0", "is it big?", "what is 11 * 4?")]
    verdicts = [{"prompt_id": "t0", "order": "before_A", "verdict": "B"},
                {"prompt_id": "t0", "order": "after_A", "verdict": "A"}]
    s = results(rows, verdicts)["summary"]
    assert (s["questions"], s["judged"], s["after_wins"], s["win_rate"]) == (4, 1, 1, 1.0)
    assert (s["no_questions_before"], s["no_questions_after"], s["not_compared"], s["identical"]) == (1, 1, 2, 1)
    rows, _ = compare(tests, {k: {"response": v} for k, v in after.items()})
    with pytest.raises(InputError, match="question t0 has verdicts for"):
        results(rows, verdicts[:1])
    stray = [{"prompt_id": "t2", "order": order, "verdict": "A"} for order in ORDERS]
    rows, _ = compare(tests, {k: {"response": v} for k, v in after.items()})
    with pytest.raises(InputError, match="question t2, which is not compared now"):
        results(rows, verdicts + stray)


# --- the stage, through HTTP ---------------------------------------------------------------------

N_TEST = 6


def question_text(i: int) -> str:
    return f"Is {i + 11} * 4 more than 60?"


def before_draft(i: int) -> str:
    if i == 4:
        return "The answer is no."  # no Questions: line
    if i == 5:
        return after_draft(5)  # the same questions after training
    return f"Answer: No - a guess\nQuestions: is {i} big?"


def after_draft(i: int) -> str:
    return f"Answer: Yes - I checked\nQuestions: what is {i + 11} * 4? is it more than 60?"


def which(text: str) -> int:
    return next(i for i in range(N_TEST) if question_text(i) in text)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run whose iteration 0 drafted one training and six test questions."""
    rows = [{"id": "q0", "split": "train", "prompt": "Is 99 * 4 more than 60?", "metadata": {"expected_answer": "yes"},
             "response": "Answer: Yes\nQuestions: what is 99 * 4?", "finish_reason": "stop"}]
    rows += [{"id": f"t{i}", "split": "test", "prompt": question_text(i),
              "metadata": {"expected_answer": "no" if i < 2 else "yes"}, "response": before_draft(i),
              "finish_reason": "stop"} for i in range(N_TEST)]
    iteration = tmp_path / "run" / "iter_00"
    iteration.mkdir(parents=True)
    (iteration / "drafts_1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (iteration / "drafts.done").write_text(json.dumps({"output": "drafts_1.jsonl"}))
    return tmp_path / "run"


def student_reply(n, path, body, headers):
    text = after_draft(which(prompt_of(body)))
    return 200, {}, json.dumps({"id": "c", "object": "text_completion", "model": body["model"],
                                "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
                                "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70}})


def judge_text(prompt: str) -> str:
    """t0, t1: the set that asks for the product, in either position; t2: always A; t3: no verdict."""
    i = which(prompt)
    if i == 2:
        return "Both help.\nBetter: A"
    if i == 3:
        return "Both sets are useful in their own way."
    return "It asks for the product.\nBetter: " + ("A" if "* 4?" in sets_of(prompt)[0] else "B")


def judge_reply(n, path, body, headers):
    return 200, {}, json.dumps({"id": "c", "object": "chat.completion", "model": body["model"],
                                "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                    "role": "assistant", "content": judge_text(body["messages"][-1]["content"])}}],
                                "usage": {"prompt_tokens": 120, "completion_tokens": 10, "total_tokens": 130}})


def command(run_dir: Path, student_url: str, *judge: str) -> list[str]:
    return [sys.executable, "question_quality.py", "--config", str(CONFIG), "--run_dir", str(run_dir),
            "--iteration", "3", "--model", "smollm2-135m", "--set", "generation.backend=openai",
            "--set", f"generation.base_url={student_url}", "--set", "generation.api=completions", *judge]


def fake_judge(url: str) -> list[str]:
    return ["--set", "distill.teacher_model=gpt-judge", "--set", "distill.teacher_generation.backend=openai",
            "--set", f"distill.teacher_generation.base_url={url}", "--set", "distill.teacher_generation.api=chat"]


def marker(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / "iter_03" / f"{stage}.done").read_text())


def test_the_stage_drafts_the_test_questions_and_judges_them_in_both_orders(weightless_env, run_dir):
    with fake_servers() as start:
        student, judge = start(student_reply), start(judge_reply)
        result = subprocess.run(command(run_dir, student.url, *fake_judge(judge.url)), cwd=REPO, env=weightless_env,
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 0, result.stderr[-3000:]

        # the student drafted the six test questions (not the training one) with the draft prompt
        asked = sorted(which(body["prompt"]) for body in student.bodies())
        assert asked == list(range(N_TEST))
        assert all("Answer in exactly two lines:" in body["prompt"] for body in student.bodies())
        # after the run's two worked drafts (distill_tiny: draft_shots 2), as drafts.py drafts
        assert all(body["prompt"].count("Answer in exactly two lines:") == 3 for body in student.bodies())
        assert len(marker(run_dir, "question_drafts")["metrics"]["draft_shots"]) == 2
        # the judge: t0..t3 (t4 has no Questions: line before, t5 the same questions), each in both orders
        bodies = judge.bodies()
        assert sorted(which(prompt_of(b)) for b in bodies) == [0, 0, 1, 1, 2, 2, 3, 3]
        for i in range(4):
            shown = sorted(sets_of(prompt_of(b)) for b in bodies if which(prompt_of(b)) == i)
            assert shown == sorted([(f"is {i} big?", f"what is {i + 11} * 4? is it more than 60?"),
                                    (f"what is {i + 11} * 4? is it more than 60?", f"is {i} big?")])
        for b in bodies:
            assert b["model"] == "gpt-judge" and b["messages"][0] == {"role": "system",
                                                                     "content": "You are a patient, exact teacher."}
            assert "a guess" not in prompt_of(b) and "I checked" not in prompt_of(b)  # only the questions are shown
            assert b.get("temperature") == 0.0

        expected = {"questions": 6, "judged": 4, "after_wins": 2, "before_wins": 0, "inconsistent": 1, "unparsable": 1,
                    "decided": 3, "win_rate": round(2.5 / 3, 4), "chance": 0.5, "position_consistency": round(2 / 3, 4),
                    "verdicts": 8, "verdicts_unparsable": 2, "verdict_a_share": round(4 / 6, 4),
                    "no_questions_before": 1, "no_questions_after": 0, "not_compared": 1, "identical": 1,
                    "meets_seed_criterion": True}
        done = marker(run_dir, "question_quality")
        assert {k: done["metrics"][k] for k in expected} == expected
        assert done["judge"] == "gpt-judge" and done["model"] == "smollm2-135m"
        saved = json.loads((run_dir / "iter_03" / done["output"]).read_text())
        assert {k: saved[k] for k in expected} == expected
        assert [(r["id"], r["outcome"]) for r in saved["results"]] == [
            ("t0", "after"), ("t1", "after"), ("t2", "inconsistent"), ("t3", "unparsable"), ("t4", "no_questions"),
            ("t5", "identical")]
        assert saved["results"][2]["verdicts"] == {"before_A": "A", "after_A": "A"}

        verdicts = [json.loads(line) for line in (run_dir / "iter_03" / marker(run_dir, "question_verdicts")["output"])
                    .read_text().splitlines()]
        assert [v["id"] for v in verdicts] == [f"t{i}|{o}" for i in range(4) for o in ORDERS]
        assert [v["preferred"] for v in verdicts[:2]] == ["after", "after"] and verdicts[6]["verdict"] is None
        drafts = [json.loads(line) for line in (run_dir / "iter_03" / marker(run_dir, "question_drafts")["output"])
                  .read_text().splitlines()]
        assert [d["id"] for d in drafts] == [f"t{i}" for i in range(N_TEST)]
        assert all(d["split"] == "test" and d["generator"] == "smollm2-135m" and d["draft_answer"] == "yes"
                   for d in drafts)

        # the figures again from the files on disk: not one request more
        (run_dir / "iter_03" / "question_quality.done").unlink()
        calls = len(student.calls), len(judge.calls)
        result = subprocess.run(command(run_dir, student.url, *fake_judge(judge.url)), cwd=REPO, env=weightless_env,
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 0, result.stderr[-3000:]
        assert (len(student.calls), len(judge.calls)) == calls
        assert {k: marker(run_dir, "question_quality")["metrics"][k] for k in expected} == expected


def test_a_missing_judge_key_stops_the_stage_before_any_draft(weightless_env, run_dir):
    with fake_servers() as start:
        student = start(student_reply)
        remote = ["--set", "distill.teacher_model=gpt-judge", "--set", "distill.teacher_generation.backend=openai",
                  "--set", "distill.teacher_generation.base_url=https://api.example.invalid/v1",
                  "--set", "distill.teacher_generation.api=chat"]
        result = subprocess.run(command(run_dir, student.url, *remote), cwd=REPO, env=weightless_env,
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 2 and result.stderr.splitlines()[-1].startswith("error: ")
        assert "$OPENAI_API_KEY is not set" in result.stderr and not student.calls
        assert not (run_dir / "iter_03").exists()


@pytest.mark.slow
def test_a_real_llama_cpp_server_judges_and_every_verdict_is_parsed_or_counted(run_dir):
    """The judge is llama.cpp's OpenAI-compatible server, launched by the stage on the embedded model
    (`teacher_generation.server: llama_cpp`, chat API); the student's drafts come from the fake server so
    that every compared question is known. Whatever the 135M judge writes, each reply is on disk, its
    verdict is what the parser reads from it, and the counts add up."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is a pinned test dependency (make setup-test)")
    env = {k: v for k, v in os.environ.items()  # loopback servers: no key, no proxy
           if k != "OPENAI_API_KEY" and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    judge = ["--set", "distill.teacher_model=smollm2-135m", "--set", "distill.teacher_generation.backend=openai",
             "--set", "distill.teacher_generation.server=llama_cpp", "--set", "distill.teacher_generation.api=chat",
             "--set", "distill.question_quality_max_tokens=48"]
    with fake_servers() as start:
        student = start(student_reply)
        result = subprocess.run(command(run_dir, student.url, *judge), cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    done = marker(run_dir, "question_verdicts")
    verdicts = [json.loads(line) for line in (run_dir / "iter_03" / done["output"]).read_text().splitlines()]
    assert [v["id"] for v in verdicts] == [f"t{i}|{o}" for i in range(4) for o in ORDERS]
    for v in verdicts:
        assert v["response"].strip() and v["judge"] == "smollm2-135m" and v["finish_reason"] in ("stop", "length")
        assert v["verdict"] == parse_verdict(v["response"], v["finish_reason"])
        assert v["preferred"] == preferred(v["order"], v["verdict"])
    metrics = done["metrics"]
    assert metrics["backend"]["server"] == "llama_cpp" and metrics["requests"] == 8
    assert 0 < metrics["generated_tokens"] <= 48 * 8
    assert metrics["unparsable"] == sum(v["verdict"] is None for v in verdicts)
    s = marker(run_dir, "question_quality")["metrics"]
    assert s["judged"] == 4 and s["after_wins"] + s["before_wins"] + s["inconsistent"] + s["unparsable"] == 4
    assert s["decided"] == s["after_wins"] + s["before_wins"] + s["inconsistent"]
    assert (s["win_rate"] is None) == (s["decided"] == 0) and s["verdicts"] == 8
    assert s["win_rate"] is None or 0.0 <= s["win_rate"] <= 1.0
