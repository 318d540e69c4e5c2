"""Self-Rewarding stages on files: truth scores and EFT targets, pairs from judgements, the seed-data
readers, and bad input (exit 2, one line naming file and line, nothing written). No model is loaded
except the embedded tokenizer where a stage renders prompts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from selftrain.config import load_config
from selftrain.rewards.ifeval import IFEvalReward
from selftrain.self_rewarding import justification, truth_score
from tests.test_cli_errors import error_line, run_script, snapshot, write_config

LOWER = {"instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}], "topic": "dogs"}
TWO = {"instruction_id_list": ["punctuation:no_comma", "keywords:existence"],
       "kwargs": [{}, {"keywords": ["river"]}], "topic": "cats"}
SPEC = {"system_prompt": "Be brief.", "k": 0, "few_shot_file": "", "use_chat_template": True}
CONFIG = {"method": "self_rewarding", "task": {"name": "ifeval", "n_train": 4, "n_test": 2},
          "reward_config": {"type": "rule_based", "rule_type": "ifeval"}, "system_prompt": "Be brief.",
          "self_rewarding": {"judge_samples": 2}}


def judged(record_id: str, metadata: dict, response: str, finish: str = "stop", prompt_id: str = "p1") -> dict:
    record = {"id": record_id, "prompt_id": prompt_id, "prompt": "Describe the topic.", "metadata": metadata,
              "response": response, "finish_reason": finish, "prompt_text": f"<{prompt_id}>", "prompt_spec": SPEC}
    return {**record, **IFEvalReward().score([record])[0]}


def test_truth_score_adds_complete_on_topic_and_instruction_points():
    assert truth_score(judged("a", LOWER, "dogs are loyal and kind animals.")) == 5
    assert truth_score(judged("b", LOWER, "Dogs are loyal and kind animals.")) == 2  # complete, on topic, not lower
    assert truth_score(judged("c", LOWER, "dogs are loyal and kind animals that", finish="length")) == 4  # cut off: no first point
    assert truth_score(judged("d", LOWER, "the weather is very nice and sunny today.")) == 4  # off topic
    assert truth_score(judged("e", LOWER, "   ")) == 0
    # two instructions, one followed: one of the three instruction points
    assert truth_score(judged("f", TWO, "Cats sleep, eat and purr.")) == 2
    assert truth_score(judged("g", TWO, "Cats sleep by the river.")) == 5


def test_justification_cites_each_check_and_ends_with_the_truth():
    text = justification(judged("f", TWO, "Cats sleep, eat and purr."))
    lines = text.splitlines()
    assert lines[0] == "The response is complete." and lines[1] == "It is about cats."
    assert lines[2].endswith(": not followed") and "comma" in lines[2]
    assert lines[3].endswith(": not followed") and "river" in lines[3]
    assert lines[-1] == "Score: 2"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def judgement(candidate: str, k: int, text: str) -> dict:
    return {"id": f"{candidate}@{k}", "candidate_id": candidate, "judge_idx": k, "response": text,
            "finish_reason": "stop"}


def test_pairs_from_judgements_highest_vs_lowest_with_precision(tmp_path):
    candidates = [judged("p1#0", LOWER, "dogs are loyal and kind animals."),           # truth 5
                  judged("p1#1", LOWER, "Dogs Are Loud."),                             # truth 2
                  judged("p1#2", LOWER, "dogs bark at night", finish="length"),       # truth 4, cut off
                  judged("p2#0", TWO, "Cats sleep, eat and purr.", prompt_id="p2"),   # truth 2
                  judged("p2#1", TWO, "Cats nap by the river.", prompt_id="p2"),      # truth 5
                  judged("p3#0", TWO, "Cats purr.", prompt_id="p3"),
                  judged("p3#1", TWO, "Cats hiss.", prompt_id="p3")]
    judgements = [judgement("p1#0", 0, "Fine.\nScore: 4"), judgement("p1#0", 1, "Score: 5"),
                  judgement("p1#1", 0, "Capitals.\nScore: 1"), judgement("p1#1", 1, "no score here"),
                  judgement("p1#2", 0, "Score: 5"), judgement("p1#2", 1, "Score: 5"),  # top, but never chosen
                  judgement("p2#0", 0, "Score: 4"), judgement("p2#0", 1, "Score: 4"),  # the judge is wrong here
                  judgement("p2#1", 0, "Score: 2"), judgement("p2#1", 1, "Score: 9"),
                  judgement("p3#0", 0, "Score: 3"), judgement("p3#0", 1, "Score: 4"),
                  judgement("p3#1", 0, "Score: 4"), judgement("p3#1", 1, "Score: 3")]  # a tie
    write_jsonl(tmp_path / "r.judged.jsonl", candidates)
    write_jsonl(tmp_path / "r.judgements.jsonl", judgements)
    config = write_config(tmp_path / "c.json", CONFIG)
    proc = run_script("pairs.py", "--config", config, "--input", tmp_path / "r.judged.jsonl")
    assert proc.returncode == 0, proc.stderr
    pairs = [json.loads(line) for line in (tmp_path / "r.pairs.jsonl").read_text().splitlines()]
    assert [(p["chosen_id"], p["rejected_id"]) for p in pairs] == [("p1#0", "p1#1"), ("p2#0", "p2#1")]
    assert pairs[0]["prompt"] == "<p1>" and pairs[0]["chosen"] == "dogs are loyal and kind animals."
    assert pairs[0]["score_chosen"] == 4.5 and pairs[0]["score_rejected"] == 1.0
    assert pairs[0]["prompt_spec"] == {**SPEC, "system_prompt": "Be brief."}
    metrics = json.loads((tmp_path / "r.pairs.config.json").read_text())["metrics"]
    assert metrics["pairs"] == 2 and metrics["tie"] == 1 and metrics["tie_rate"] == round(1 / 3, 4)
    assert metrics["pair_precision"] == 0.5  # p1's chosen truly better, p2's truly worse
    assert metrics["judge"]["n_scored"] == 7


def test_all_tied_round_stops_with_a_message_and_writes_nothing(tmp_path):
    candidates = [judged("p1#0", LOWER, "dogs run."), judged("p1#1", LOWER, "Dogs Run.")]
    write_jsonl(tmp_path / "r.judged.jsonl", candidates)
    write_jsonl(tmp_path / "r.judgements.jsonl", [judgement(c, k, "Score: 3") for c in ("p1#0", "p1#1") for k in (0, 1)])
    before = snapshot(tmp_path)
    line = error_line(run_script("pairs.py", "--config", write_config(tmp_path / "c.json", CONFIG),
                                 "--input", tmp_path / "r.judged.jsonl"))
    assert "no preference pairs" in line and "1 tied" in line, line
    assert snapshot(tmp_path).keys() == before.keys() | {"c.json"}


def test_pairs_need_every_judgement_of_every_candidate(tmp_path):
    write_jsonl(tmp_path / "r.judged.jsonl", [judged("p1#0", LOWER, "dogs."), judged("p1#1", LOWER, "Dogs.")])
    write_jsonl(tmp_path / "r.judgements.jsonl", [judgement("p1#0", 0, "Score: 3"), judgement("p1#0", 1, "Score: 2"),
                                                  judgement("p1#1", 0, "Score: 3")])  # killed before p1#1@1
    line = error_line(run_script("pairs.py", "--config", write_config(tmp_path / "c.json", CONFIG),
                                 "--input", tmp_path / "r.judged.jsonl"))
    assert "1 judgements missing (e.g. p1#1@1; self_rewarding.judge_samples is 2)" in line, line


def test_identical_replies_are_one_candidate_with_pooled_judgements():
    from selftrain.self_rewarding import scored_groups

    same = "dogs are loyal and kind animals."
    candidates = [judged("p1#0", LOWER, same), judged("p1#1", LOWER, "Dogs Are Loud."), judged("p1#2", LOWER, same)]
    judgements = [judgement("p1#0", 0, "Score: 5"), judgement("p1#0", 1, "Score: 4"),
                  judgement("p1#1", 0, "Score: 2"), judgement("p1#1", 1, "none"),
                  judgement("p1#2", 0, "Score: 1"), judgement("p1#2", 1, "Score: 2")]
    (group,) = scored_groups(candidates, judgements, 2, "test").values()
    assert [(c["id"], c["copies"], c["mean_score"], c["n_judgements"], c["n_ok"]) for c in group] == [
        ("p1#0", 2, 3.0, 4, 4), ("p1#1", 1, 2.0, 2, 1)]


@pytest.mark.parametrize("record, message", [
    ({"prompt": "Rate this.", "response": "ok"}, "score: missing (an integer 0..5 is needed)"),
    ({"prompt": "Rate this.", "response": "ok", "score": 7}, "score: 7"),
    ({"prompt": "Rate this.", "response": "", "score": 3}, "response: missing or empty"),
])
def test_eft_file_errors_name_file_line_and_field(tmp_path, record, message):
    data = write_jsonl(tmp_path / "eft.jsonl", [{"prompt": "Rate.", "response": "fine", "score": 2}, record])
    config = write_config(tmp_path / "c.json", CONFIG)
    line = error_line(run_script("eft_data.py", "--config", config, "--data_path", data,
                                 "--output", tmp_path / "out.jsonl"))
    assert line.startswith(f"error: {data}:2: {message}"), line
    assert not (tmp_path / "out.jsonl").exists()


def test_judge_template_without_response_placeholder_is_refused_before_any_work(tmp_path):
    template = tmp_path / "judge.txt"
    template.write_text("Rate the answer to {prompt}.\nScore: <points>")
    config = write_config(tmp_path / "c.json", {**CONFIG, "self_rewarding": {"judge_template": str(template)}})
    write_jsonl(tmp_path / "r.samples.jsonl", [judged("p1#0", LOWER, "dogs.")])
    line = error_line(run_script("llm_judge.py", "--config", config, "--input", tmp_path / "r.samples.jsonl"))
    assert line == f"error: {template}: judge template: no {{response}} placeholder", line
    assert not (tmp_path / "r.judgements.jsonl").exists()


def test_ift_file_shapes_render_with_the_one_prompt_builder(tmp_path, tokenizer, smol_tokenizer_dir):
    from selftrain.stages.seed_data import from_file

    sharegpt = tmp_path / "seed.json"
    sharegpt.write_text(json.dumps([
        {"conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "hi"}]},
        {"messages": [{"role": "user", "content": "Say bye."}, {"role": "assistant", "content": "bye"}]},
        {"prompt": "Say yes.", "response": "yes"}]))
    config = load_config(None, {**CONFIG, "base_model_path": smol_tokenizer_dir})
    out = tmp_path / "ift.jsonl"
    assert from_file(config, "ift", sharegpt, smol_tokenizer_dir, out)["train_examples"] == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["response"] for r in rows] == ["hi", "bye", "yes"]
    expected = tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": "Say bye."}],
                                             tokenize=False, add_generation_prompt=True)
    assert rows[1]["prompt_text"] == expected
    assert rows[0]["prompt_spec"] == rows[2]["prompt_spec"] == {**SPEC}


def test_ift_file_without_an_assistant_turn_is_an_error(tmp_path):
    data = write_jsonl(tmp_path / "ift.jsonl", [{"messages": [{"role": "user", "content": "Hi"}]}])
    line = error_line(run_script("ift_data.py", "--config", write_config(tmp_path / "c.json", CONFIG),
                                 "--data_path", data, "--output", tmp_path / "out.jsonl"))
    assert line.startswith(f"error: {data}:1: messages: the last message must be the assistant's"), line


def test_self_rewarding_needs_the_ifeval_reward(tmp_path):
    config = write_config(tmp_path / "c.json", {**CONFIG, "reward_config": {"type": "rule_based", "rule_type": "math"}})
    line = error_line(run_script("pairs.py", "--config", config, "--input", tmp_path / "x.judged.jsonl"))
    assert "method: self_rewarding needs reward_config" in line, line
