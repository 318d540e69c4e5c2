"""Seed 002's Expert Iteration experiment on the tiny model: what each arm trains on, and the table."""
from __future__ import annotations

import json

import pytest

from selftrain.config import load_config
from selftrain.errors import InputError
from selftrain.experiments import expert_iteration
from selftrain.prompts import PromptSpec, render_prompt
from tests.test_stages import snapshot, task_records, write_config


def judged_file(path, tokenizer, spec):
    """3 prompts x 2 samples: 3 correct, 2 wrong, and 1 wrong and cut off."""
    rows = []
    for i, p in enumerate(task_records("train")[:3]):
        answer = p["metadata"]["expected_answer"]
        for j in range(2):
            correct = (i + j) % 2 == 0
            rows.append({"id": f"{p['id']}#{j}", "prompt_id": p["id"], "prompt_text": render_prompt(tokenizer, p, spec),
                         "response": f"Answer: {answer if correct else int(answer) + 1}",
                         "finish_reason": "length" if (i, j) == (1, 0) else "stop", "metadata": p["metadata"],
                         "difficulty": "easy", "is_correct": correct, "reward_score": float(correct)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_two_arms_differ_only_by_the_filter_and_the_table_reports_them(tmp_path, tiny_model_dir, tokenizer, capsys):
    config_path = write_config(tmp_path / "c.json", tiny_model_dir, num_generations_per_prompt=2, max_per_prompt=1)
    rows = judged_file(tmp_path / "judged.jsonl", tokenizer, PromptSpec.from_config(load_config(config_path)))
    assert sum(r["is_correct"] for r in rows) == 3
    out = tmp_path / "exit"
    argv = ["--config", str(config_path), "--judged", str(tmp_path / "judged.jsonl"), "--output_dir", str(out),
            "--set", "dtype=fp32"]
    expert_iteration.main(argv)

    def train_ids(arm):
        return sorted(json.loads(line)["id"] for line in (out / arm / "train.jsonl").read_text().splitlines())

    # everything but the cut-off reply; max_per_prompt 1 of the config does not cap the arms
    assert train_ids("unfiltered") == sorted(r["id"] for r in rows if r["finish_reason"] == "stop")
    assert train_ids("filtered") == sorted(r["id"] for r in rows if r["is_correct"] and r["finish_reason"] == "stop")
    for arm in ("unfiltered", "filtered"):
        saved = json.loads((out / arm / "model" / "selftrain_config.json").read_text())
        assert saved["init_model"] == tiny_model_dir  # both from the same base
        assert json.loads((out / arm / "eval.json").read_text())["n"] == 4  # the same held-out set
    unfiltered = json.loads((out / "unfiltered" / "train.done").read_text())["metrics"]
    assert unfiltered["correct_percent"] == 60.0 and unfiltered["train_examples"] == 5
    table = (out / "table.md").read_text()
    assert "| Unfiltered | all samples (5) | 60.0% |" in table
    assert "| Filtered | correct samples (3) | 100.0% |" in table
    assert "| Improvement | - | - |" in table and table in capsys.readouterr().out

    before = snapshot(out)
    expert_iteration.main(argv)  # resumes: nothing is retrained or rewritten but the table
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k != "table.md"} == {k: v for k, v in before.items() if k != "table.md"}

    other = tmp_path / "other.jsonl"
    other.write_text((tmp_path / "judged.jsonl").read_text())
    with pytest.raises(InputError, match="made from .*judged.jsonl, not .*other.jsonl"):
        expert_iteration.main(argv[:3] + [str(other)] + argv[4:])  # never reuses arms made from another file
