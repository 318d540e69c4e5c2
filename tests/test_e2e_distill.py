"""End to end: `make rounds` with `method: distill` on configs/distill_tiny.yaml, the real embedded model.

The base student drafts (iteration 0), the run trains its own teacher (teacher/iter_01), the teacher
reasons about the training drafts, its replies are validated against the truth and balanced, Track A
(question -> answer) and Track B (question + draft -> reasoning) are trained and evaluated with the
ablations, and Phase C runs the seed's DPO schedule. A second `make rounds` runs no stage and touches
no file.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.test_e2e import needs_setup, read_jsonl, snapshot

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/distill_tiny.yaml"
SCRIPTS = ("drafts.py", "teacher.py", "distill_data.py", "distill_eval.py", "train.py", "train_dpo.py")


def make_rounds(results: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    proc = subprocess.run(["make", "rounds", f"CONFIG={CONFIG}", "RUN=dt", f"RESULTS={results}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"make rounds failed:\n{(proc.stdout + proc.stderr)[-6000:]}"
    return proc.stdout + proc.stderr


def markers(it: Path) -> dict[str, dict]:
    return {p.name[:-len(".done")]: json.loads(p.read_text()) for p in it.glob("*.done")}


@pytest.mark.slow
def test_make_rounds_distill_runs_every_phase_and_a_rerun_does_nothing(tmp_path):
    needs_setup()
    make_rounds(tmp_path)
    run_dir = tmp_path / "dt"
    it = [run_dir / f"iter_{n:02d}" for n in range(4)]
    done = [markers(i) for i in it]
    assert set(done[0]) == {"drafts", "eval"}
    assert set(done[1]) == {"teacher", "validated", "track_a", "model", "eval"}
    assert set(done[2]) == {"track_b", "model", "eval", "eval_no_draft", "eval_shuffled"}
    assert set(done[3]) == {"pairs", "model", "eval", "eval_no_draft", "eval_shuffled"}
    assert set(markers(run_dir / "teacher" / "iter_01")) == {"teacher_data", "model"}

    drafts = read_jsonl(it[0] / done[0]["drafts"]["output"])
    assert {d["split"] for d in drafts} == {"train", "dev", "test"}
    assert sum(d["split"] == "train" for d in drafts) == 10  # distill.train_samples
    replies = read_jsonl(it[1] / done[1]["teacher"]["output"])
    assert sorted(r["id"] for r in replies) == sorted(d["id"] for d in drafts if d["split"] == "train")
    assert {r["teacher"] for r in replies} == {str(run_dir / "teacher" / "iter_01" / "model")}

    validated = done[1]["validated"]["metrics"]
    kept = read_jsonl(it[1] / done[1]["validated"]["output"])
    assert validated["replies"] == 10 and validated["kept"] == len(kept) >= 1
    assert all(r["teacher_answer"] == r["metadata"]["expected_answer"] for r in kept)
    assert sum(validated["classes_before"].values()) == 10 and validated["ratio_before"] == "50/50"

    track_a = read_jsonl(it[1] / done[1]["track_a"]["output"])
    assert {r["response"] for r in track_a} <= {"Yes", "No"} and len(track_a) == len(kept)
    track_b = read_jsonl(it[2] / done[2]["track_b"]["output"])
    for row in track_b:  # trained on exactly the prompt evaluation renders: question + draft -> the reasoning
        assert "Student draft:\n" in row["prompt_text"] and "## Final Assessment" in row["response"]
    assert done[2]["model"]["init_model"] == str(it[1] / "model")

    pairs = read_jsonl(it[3] / done[3]["pairs"]["output"])
    assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
    dpo = done[3]["model"]
    assert dpo["init_model"] == str(it[2] / "model")
    assert [p["loss_type"] for p in dpo["metrics"]["phases"]] == ["sigmoid", "batch_centred", "batch_centred"]
    assert [p["beta"] for p in dpo["metrics"]["phases"]] == [0.05, 0.1, 0.1]

    for n in range(4):
        for name, marker in done[n].items():
            if not name.startswith("eval"):
                continue
            result = json.loads((it[n] / marker["output"]).read_text())
            assert result["n"] == 6 and 0 <= result["accuracy"] <= 1
            assert abs(result["predicted_yes"] + result["predicted_no"] + result["unclear"] / 6 - 1) < 1e-3  # 4 decimals
    assert done[0]["eval"]["metrics"]["variant"] == "a" and done[3]["eval"]["metrics"]["variant"] == "b"

    report = subprocess.run(["make", "report", f"CONFIG={CONFIG}", "RUN=dt", f"RESULTS={tmp_path}"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "Project Goals vs Actual Results" in report.stdout and "Phase C, the DPO schedule" in report.stdout

    before = snapshot(run_dir)
    again = make_rounds(tmp_path)
    assert not any(script in again for script in SCRIPTS), again
    assert snapshot(run_dir) == before
