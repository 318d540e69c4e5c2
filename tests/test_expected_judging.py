"""Expected-score judging (G-Eval): the score from given log-probabilities, the opening the tokenizer
needs, the EFT targets in each order, the local prefix scorer (shared prefix, results independent of the
other requests), and the stage killed with -9 midway, resumed, giving the unbroken run's scores."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selftrain.errors import InputError
from selftrain.self_rewarding import (expected_score, judgement_score, judgement_text, judgements_per_candidate,
                                      opening_after, score_opening)

REPO = Path(__file__).resolve().parents[1]


def test_expected_score_by_hand():
    # probabilities 0.1, 0.2, 0, 0.2, unlisted, 0.1 for the scores 0..5: mass 0.6,
    # mean (0*.1 + 1*.2 + 3*.2 + 5*.1) / .6 = 1.3 / .6
    logprobs = [math.log(0.1), math.log(0.2), float("-inf"), math.log(0.2), None, math.log(0.1)]
    value, mass = expected_score(logprobs)
    assert mass == pytest.approx(0.6)
    assert value == pytest.approx(1.3 / 0.6)


def test_expected_score_one_token_and_none():
    assert expected_score([None, None, None, None, math.log(0.5), None]) == (pytest.approx(4.0), pytest.approx(0.5))
    assert expected_score([None] * 6) == (None, 0.0)  # nothing listed: no score, never a default


def test_judgement_score_reads_expected_score():
    assert judgement_score({"expected_score": 3.25, "response": "Score: ", "finish_reason": "stop"}).score == 3.25
    failed = judgement_score({"expected_score": None, "response": "Score: "})
    assert failed.score is None and failed.status == "no_score"


def test_judgements_per_candidate():
    from selftrain.config import SelfRewardingConfig

    assert judgements_per_candidate(SelfRewardingConfig(judge_samples=3)) == 3
    assert judgements_per_candidate(SelfRewardingConfig(judge_samples=3, judge_scoring="expected")) == 1


def test_score_opening_of_the_embedded_tokenizer(tokenizer):
    # SmolLM2 writes "Score: 4" as Score | : | ' ' | 4: the opening keeps the space, the options are digits
    assert score_opening(tokenizer) == ("Score: ", ("0", "1", "2", "3", "4", "5"))


def test_opening_after_cuts_at_the_last_label():
    assert opening_after("ok\nScore: 3\nmore\nScore: 4 because", "Score: ") == "ok\nScore: 3\nmore\nScore: "
    assert opening_after("- complete\n**Score:** 5", "Score: ") == "- complete\nScore: "
    assert opening_after("the reply is cut off and", "Score: ") == "the reply is cut off and\nScore: "
    assert opening_after("a score of 3 is", "Score: ") == "a score of 3 is\nScore: "  # not a label at a line start


def test_judgement_text_orders():
    lines = ["The response is complete.", "- no commas: followed"]
    assert judgement_text(4, lines, "first") == "The response is complete.\n- no commas: followed\nScore: 4"
    assert judgement_text(4, lines, "after") == "Score: 4\nThe response is complete.\n- no commas: followed"
    assert judgement_text(4, lines, "none") == "Score: 4"
    assert judgement_text(2, [], "first") == "Score: 2"


def test_config_rejects_unknown_scoring():
    from selftrain.config import load_config

    with pytest.raises(InputError, match="self_rewarding.judge_scoring: 'mean' is not one of sampled, expected"):
        load_config(overrides={"self_rewarding": {"judge_scoring": "mean"}})
    with pytest.raises(InputError, match="self_rewarding.judge_justification"):
        load_config(overrides={"self_rewarding": {"judge_justification": "middle"}})


# --- the local prefix scorer on a tiny random Llama ------------------------------------------------

@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    from selftrain.generation.local import LocalBackend
    from selftrain.prompts import PromptSpec

    return LocalBackend(tiny_model_dir, PromptSpec(system_prompt="Judge.", k=0, few_shot_file="",
                                                   use_chat_template=True), progress=False)


def _requests(tokenizer, n: int, prefix: str):
    from selftrain.generation.base import ScoreRequest

    return [ScoreRequest(f"r{i}", prefix + f"request {i}: " + "word " * (i % 5) + "\nScore: ",
                         ("0", "1", "2", "3", "4", "5"), shared_prefix=prefix) for i in range(n)]


def test_prefix_scorer_matches_whole_prompt_and_ignores_the_others(backend, tokenizer):
    import torch

    prefix = "You grade replies. " * 8
    requests = _requests(tokenizer, 7, prefix)
    together = {r.key: r.logprobs for r in backend.score_options(requests)}
    # a resumed stage asks the rest in another order and split: bit-identical results
    alone = {r.key: r.logprobs for part in (requests[4:], requests[:2][::-1], requests[2:4])
             for r in backend.score_options(part)}
    assert alone == together
    # sharing the prefix gives what a whole-prompt pass gives (up to float rounding)
    ids = backend.encode(requests[3].prompt_text)
    with torch.inference_mode():
        logp = backend.model(input_ids=torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)
    option_ids = [tokenizer(o, add_special_tokens=False)["input_ids"][0] for o in requests[3].options]
    assert together["r3"] == pytest.approx([float(logp[i]) for i in option_ids], abs=1e-4)
    assert all(v <= 0 for v in together["r3"])
    assert backend.stats.requests >= 14 and backend._scorer.stats["prefix_tokens_reused"] > 0


def test_prefix_scorer_refuses_a_multi_token_option(backend):
    from selftrain.generation.base import ScoreRequest

    with pytest.raises(InputError, match="'10' is 2 tokens"):
        list(backend.score_options([ScoreRequest("a", "Score: ", ("0", "10"))]))


# --- the stage: kill -9 midway, rerun, the unbroken run's scores -----------------------------------

def _candidates(path: Path, n_prompts: int) -> Path:
    rows = []
    for p in range(n_prompts):
        for c, reply in enumerate(["Cats sleep a lot. They purr.", "dogs, cats, birds", "I cannot help."]):
            rows.append({"id": f"p{p}-c{c}", "prompt_id": f"p{p}", "prompt": f"Write about topic {p}. No commas.",
                         "response": reply + " " * p})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _judge(tmp_path: Path, model: str, config: Path, candidates: Path, output: Path, env: dict):
    return subprocess.Popen([sys.executable, "llm_judge.py", "--config", str(config), "--input", str(candidates),
                             "--judge_model", model, "--output", str(output)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill_during_expected_judging_then_resume_gives_the_unbroken_scores(tmp_path, tiny_model_dir):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"base_model_path": tiny_model_dir, "system_prompt": "Judge.",
                                  "self_rewarding": {"judge_scoring": "expected", "judge_justification": "none"},
                                  "generation": {"backend": "selftrain"}}))
    candidates = _candidates(tmp_path / "cands.jsonl", 200)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    unbroken = tmp_path / "unbroken.jsonl"
    proc = _judge(tmp_path, tiny_model_dir, config, candidates, unbroken, env)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    killed = tmp_path / "killed.jsonl"
    proc = _judge(tmp_path, tiny_model_dir, config, candidates, killed, env)
    deadline = time.time() + 300
    while time.time() < deadline and (not killed.exists() or killed.read_text().count("\n") < 50):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = killed.read_text().count("\n")
    assert 50 <= written < 600, f"killed after {written} of 600 judgements: the kill did not land midway"
    proc = _judge(tmp_path, tiny_model_dir, config, candidates, killed, env)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "resuming" in out

    def scores(path):
        return {r["id"]: (r["expected_score"], r["score_logprobs"]) for r in map(json.loads, path.open())}

    assert scores(killed) == scores(unbroken)
    assert len(scores(unbroken)) == 600


# --- bad input: one line, exit 2, nothing written ---------------------------------------------------

def _llm_judge(tmp_path: Path, env: dict, *sets: str) -> subprocess.CompletedProcess:
    cands = _candidates(tmp_path / "cands.jsonl", 2)
    args = [a for s in sets for a in ("--set", s)]
    return subprocess.run([sys.executable, "llm_judge.py", "--config", "configs/self_rewarding_tiny.yaml",
                           "--input", str(cands), "--judge_model", "smollm2-135m", "--output",
                           str(tmp_path / "judgements.jsonl"), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]  # log lines may come before it
    assert errors == lines[-1:] and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


def test_expected_judging_through_a_server_without_logprobs(tmp_path, weightless_env):
    from openai_fake import fake_servers  # answers completions with text only, no logprobs

    with fake_servers() as start:
        server = start()
        proc = _llm_judge(tmp_path, weightless_env, "generation.backend=openai", f"generation.base_url={server.url}",
                          "self_rewarding.judge_scoring=expected", "self_rewarding.judge_justification=none")
    line = _one_error_line(proc)
    assert "returned no logprobs" in line and "judge_scoring" in line
    assert not (tmp_path / "judgements.jsonl").exists()


@pytest.mark.parametrize("setting, says", [
    ("self_rewarding.judge_scoring=mean", "self_rewarding.judge_scoring: 'mean' is not one of sampled, expected"),
    ("generation.api=chat", "needs generation.api: completions"),
])
def test_bad_judge_settings_stop_before_any_work(tmp_path, weightless_env, setting, says):
    extra = ("generation.backend=openai", "generation.base_url=http://127.0.0.1:9/v1",
             "self_rewarding.judge_scoring=expected") if setting.startswith("generation") else ()
    line = _one_error_line(_llm_judge(tmp_path, weightless_env, *extra, setting))
    assert says in line
    assert not (tmp_path / "judgements.jsonl").exists()


# --- EFT with a prompt's replies together ------------------------------------------------------------

def test_eft_by_prompt_keeps_every_distinct_reply_and_counts_contrasts():
    from selftrain.stages.seed_data import by_prompt

    meta = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}], "topic": "cats"}

    def reply(i, prompt, text, ok):
        return {"id": i, "prompt_id": prompt, "response": text, "ifeval_strict": [ok], "metadata": meta,
                "finish_reason": "stop"}

    kept, info = by_prompt([reply("a", "p1", "cats sleep", True), reply("b", "p1", " cats sleep ", True),
                            reply("c", "p1", "dogs, cats", False), reply("d", "p2", "cats", True)])
    assert [(r["id"], score) for r, score in kept] == [("a", 5), ("c", 2), ("d", 5)]  # "b" repeats "a"
    assert info["prompts"] == 2 and info["prompts_with_contrast"] == 1 and info["duplicates_dropped"] == 1


def test_eft_max_cut_off_caps_the_cut_off_replies_of_each_prompt(tmp_path):
    import dataclasses

    from selftrain.config import load_config
    from selftrain.stages.seed_data import capped_cut_off, eft_selection

    def reply(i, prompt, finish):
        return {"id": i, "prompt_id": prompt, "response": f"cats {i}", "ifeval_strict": [True], "finish_reason": finish,
                "metadata": {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}], "topic": "cats"}}

    judged = [reply("p1#2", "p1", "length"), reply("p1#0", "p1", "stop"), reply("p1#1", "p1", "length"),
              reply("p2#0", "p2", "length"), reply("p2#1", "p2", "length")]
    assert capped_cut_off(judged, -1) == (judged, 0)
    kept, dropped = capped_cut_off(judged, 0)
    assert [r["id"] for r in kept] == ["p1#0"] and dropped == 4
    kept, dropped = capped_cut_off(judged, 1)
    assert [r["id"] for r in kept] == ["p1#0", "p1#1", "p2#0"] and dropped == 2  # the first cut-off by id

    config = load_config("configs/self_rewarding.yaml")
    config = dataclasses.replace(config, self_rewarding=dataclasses.replace(config.self_rewarding, eft_max_cut_off=0))
    kept, info = eft_selection(config, judged)
    assert [(r["id"], score) for r, score in kept] == [("p1#0", 5)] and info["cut_off_dropped"] == 4

    bad = tmp_path / "bad.yaml"
    bad.write_text("method: self_rewarding\ntask: {name: ifeval}\nself_rewarding: {eft_max_cut_off: -2}\n")
    with pytest.raises(InputError, match="self_rewarding.eft_max_cut_off: -2 must be >= -1"):
        load_config(str(bad))
