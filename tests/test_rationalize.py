"""STaR's rationalization stage (rationalize.py) by hand, on the openai backend against the fake server.

The stage's own path end to end: judged samples in, the hinted prompts sent, the replies scored, the
rationales file out. The fake server (tests/openai_fake.py, a thread of this process) plays the model:
it reads the hinted answer off each prompt it is sent and answers each question in the way the test
chose for it (a clean rationale, one that mentions the hint, a wrong answer, one cut off), so the test
knows which rationales must be kept. The tiny random Llama's folder only supplies the tokenizer.
"""
from __future__ import annotations

import json
import re

import pytest

from selftrain.config import load_config
from selftrain.prompts import PromptSpec, render_prompt
from selftrain.stages import rationalize
from selftrain.stages.select import select_examples
from selftrain.tasks.arithmetic import generate_split

from openai_fake import fake_servers, prompt_of  # tests/ is on sys.path (pytest prepends a test file's folder)

SAMPLES = 2  # rationalization_samples: hinted attempts per unsolved prompt (one call with n=2)
HINT = re.compile(r"\(The correct answer is (-?\d+)\.")
# how the "model" answers each prompt once hinted; p0 is solved by one of its samples and never hinted,
# p4 has no expected answer to hint
PLAN = {1: "clean", 2: "leaks", 3: "wrong", 5: "cut"}


def prompts() -> list[dict]:
    rows = generate_split(6, 1, ["easy"], 0)[0]
    del rows[4]["metadata"]["expected_answer"]
    return rows


def judged(prompt: dict, j: int, correct: bool) -> dict:
    return {"id": f"{prompt['id']}#{j}", "prompt_id": prompt["id"], "sample_idx": j, "iteration": 1,
            "prompt": prompt["prompt"], "difficulty": prompt["difficulty"], "metadata": prompt["metadata"],
            "prompt_text": f"<sampled prompt {prompt['id']}>", "response": "Answer: 0", "finish_reason": "stop",
            "num_tokens": 3, "predicted": "0", "is_correct": correct, "reward_score": float(correct),
            "answer_found": True}


def reply_as_planned(questions: dict[str, int]):
    """The fake server's replies: each choice answers the prompt's question as PLAN says."""
    def reply(n, path, body, headers):
        prompt = prompt_of(body)
        which = next(i for q, i in questions.items() if q in prompt)
        answer = int(HINT.search(prompt).group(1))
        kind = PLAN.get(which, "clean")  # a prompt that should not have been sent: the test says so after
        choices = []
        for i in range(body.get("n", 1)):
            text = {"clean": f"Adding the two numbers gives {answer} (attempt {i}).\nAnswer: {answer}",
                    "leaks": f"The hint says {answer} (attempt {i}).\nAnswer: {answer}",
                    "wrong": f"It is {answer + 1} (attempt {i}).\nAnswer: {answer + 1}",
                    "cut": f"Adding gives {answer} (attempt {i}).\nAnswer: {answer}"}[kind]
            choices.append({"index": i, "text": text, "finish_reason": "length" if kind == "cut" else "stop"})
        return 200, {}, json.dumps({"choices": choices,
                                    "usage": {"prompt_tokens": 9, "completion_tokens": 7 * len(choices)}})
    return reply


@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)


def test_rationales_come_from_unsolved_prompts_only_without_the_hint_and_the_kept_ones_are_right(
        tmp_path, tiny_model_dir, tokenizer, no_proxy):
    rows = prompts()
    judged_rows = [judged(rows[0], 0, True), judged(rows[0], 1, False)]  # p0: solved once
    judged_rows += [judged(rows[i], j, False) for i in range(1, 6) for j in range(2)]
    judged_path = tmp_path / "train.judged.jsonl"
    judged_path.write_text("".join(json.dumps(r) + "\n" for r in judged_rows))
    out = tmp_path / "train.rationales.jsonl"
    with fake_servers() as start:
        server = start(reply_as_planned({r["prompt"]: i for i, r in enumerate(rows)}))
        config_path = tmp_path / "c.json"
        config_path.write_text(json.dumps({
            "base_model_path": tiny_model_dir, "k": 0, "rationalization_samples": SAMPLES, "max_new_tokens": 16,
            "generation": {"backend": "openai", "base_url": server.url, "api": "completions"}}))
        rationalize.main(["--config", str(config_path), "--input", str(judged_path), "--output", str(out)])
    config = load_config(config_path)
    spec = PromptSpec.from_config(config)

    # only the unsolved prompts with an answer to hint were sent, each once, hinted with its own answer
    hinted = {i: render_prompt(tokenizer, rows[i], spec, hint=rows[i]["metadata"]["expected_answer"]) for i in PLAN}
    assert sorted(body["prompt"] for body in server.bodies()) == sorted(hinted.values())
    assert all(body["n"] == SAMPLES for body in server.bodies())

    rationales = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rationales) == sorted(f"{rows[i]['id']}#r{j}" for i in PLAN for j in range(SAMPLES))
    for r in rationales:
        i = next(i for i in PLAN if rows[i]["id"] == r["prompt_id"])
        answer = rows[i]["metadata"]["expected_answer"]
        assert r["source"] == "rationalization" and r["hint"] == answer
        assert r["hinted_prompt_text"] == hinted[i]
        # trained on the prompt without the hint: exactly what sampling renders for the question
        assert r["prompt_text"] == render_prompt(tokenizer, rows[i], spec)
        assert "correct answer is" not in r["prompt_text"]
        assert r["is_correct"] == (PLAN[i] != "wrong") and r["leaked_hint"] == (PLAN[i] == "leaks")

    metrics = json.loads((tmp_path / "train.rationales.config.json").read_text())["metrics"]
    assert {k: metrics[k] for k in ("unsolved_prompts", "without_expected_answer", "attempts", "correct",
                                    "leaked_hint", "kept", "rationalized_prompts")} == {
        "unsolved_prompts": 5, "without_expected_answer": 1, "attempts": 4 * SAMPLES, "correct": 3 * SAMPLES,
        "leaked_hint": SAMPLES, "kept": SAMPLES, "rationalized_prompts": 1}

    # what training takes from them: p1's clean rationales only, right, on the plain prompt
    kept, stats = select_examples(config, judged_rows, rationales)
    from_rationales = [r for r in kept if r["source"] == "rationalization"]
    assert sorted(r["id"] for r in from_rationales) == [f"{rows[1]['id']}#r{j}" for j in range(SAMPLES)]
    assert stats["from_rationales"] == SAMPLES
    for r in from_rationales:
        assert r["reward_score"] == 1.0 and r["response"].endswith(f"Answer: {rows[1]['metadata']['expected_answer']}")
        assert r["prompt_text"] == render_prompt(tokenizer, rows[1], spec)
