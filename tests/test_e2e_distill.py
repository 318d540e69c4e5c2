"""End to end: `make rounds` with `method: distill` on configs/distill_tiny.yaml, the real embedded model.

The base student drafts (iteration 0), the run trains its own teacher (teacher/iter_01), the teacher
reasons about the training drafts, its replies are validated against the truth and turned into
reasoning-first targets, Track A (question -> answer) and Track B (question + draft -> reasoning) are
trained, and one on-policy Phase C round runs: Track B's model samples each kept question on Track B's
prompt, the yesno reward checks the samples, a right reply is paired with a wrong one, and DPO runs the
seed's schedule from Track B's model. Every model is evaluated on every prompt variant. A second
`make rounds` runs no stage and touches no file.
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
SCRIPTS = ("drafts.py", "teacher.py", "distill_data.py", "distill_eval.py", "train.py", "train_dpo.py",
           "distill_samples.py", "judge.py")
VARIANTS = {"eval_a", "eval_b", "eval_no_draft", "eval_shuffled"}


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
    # every model on every prompt variant: the main `eval` is its training prompt, eval_<variant> the others
    assert set(done[0]) == {"drafts", "eval"} | VARIANTS - {"eval_a"}
    assert set(done[1]) == {"teacher", "validated", "track_a", "model", "eval"} | VARIANTS - {"eval_a"}
    assert set(done[2]) == {"track_b", "model", "eval"} | VARIANTS - {"eval_b"}
    assert set(done[3]) == {"samples", "judged", "pairs", "model", "eval"} | VARIANTS - {"eval_b"}
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
    assert validated["draft_analysis"] == "drop"  # agreeing replies: kept with a target, or counted without one
    assert round(validated["teacher_agreement_of_all"] * 10) == \
        len(kept) + validated["no_reasoning"] + validated["verdict_lost"]

    track_a = read_jsonl(it[1] / done[1]["track_a"]["output"])
    assert {r["response"] for r in track_a} <= {"Yes", "No"} and len(track_a) == len(kept)
    track_b = read_jsonl(it[2] / done[2]["track_b"]["output"])
    assert len(track_b) == len(kept) >= 1  # the loop below checks rows that exist
    assert [r["response"] for r in track_b] == [r["target"] for r in kept]
    for row in track_b:  # trained on exactly the prompt evaluation renders: question + draft -> the reasoning first
        assert "Student draft:\n" in row["prompt_text"] and "## Final Assessment" in row["response"]
        assert row["response"].startswith("## Step-by-Step Reasoning\n") and "Teaching Analysis" not in row["response"]
    assert done[2]["model"]["init_model"] == str(it[1] / "model")

    # Phase C's on-policy round: Track B's model samples every kept question on Track B's prompt
    questions = list(dict.fromkeys(r["id"].split("~up")[0] for r in kept))
    prompt_of = {r["id"]: r["prompt_text"] for r in track_b}
    samples = read_jsonl(it[3] / done[3]["samples"]["output"])
    assert done[3]["samples"]["model"] == str(it[2] / "model")
    assert done[3]["samples"]["metrics"]["questions"] == len(questions)
    assert [s["id"] for s in samples] == [f"{q}#{j}" for q in questions for j in range(4)]  # distill.policy_samples
    assert all(s["prompt_text"] == prompt_of[s["prompt_id"]] for s in samples)
    judged = {s["id"]: s for s in read_jsonl(it[3] / done[3]["judged"]["output"])}
    assert len(judged) == len(samples) and all(s["is_correct"] == (s["predicted"] == s["metadata"]["expected_answer"])
                                               for s in judged.values())
    paired = done[3]["pairs"]["metrics"]
    assert paired["samples"] == len(samples) and paired["sample_accuracy"] == round(
        sum(s["is_correct"] for s in judged.values()) / len(samples), 4)
    assert paired["questions_all_correct"] + paired["questions_all_wrong"] + paired["questions_mixed"] == len(questions)
    pairs = read_jsonl(it[3] / done[3]["pairs"]["output"])
    assert pairs and paired["pairs"] == len(pairs) <= 4 and paired["kinds"] == {"on_policy": len(pairs)}
    for p in pairs:  # a right, finished reply against a wrong one of the same question
        chosen, rejected = judged[p["chosen_id"]], judged[p["rejected_id"]]
        assert chosen["prompt_id"] == rejected["prompt_id"] == p["prompt_id"] and p["prompt"] == prompt_of[p["prompt_id"]]
        assert chosen["is_correct"] and chosen["finish_reason"] == "stop" and not rejected["is_correct"]
        assert (p["chosen"], p["rejected"]) == (chosen["response"], rejected["response"])
    assert sum(paired["classes"].values()) == len(pairs)
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
    assert [done[n]["eval"]["metrics"]["variant"] for n in range(4)] == ["a", "a", "b", "b"]
    for n in range(4):
        assert {done[n][v]["metrics"]["variant"] for v in VARIANTS & set(done[n])} == \
            {v.removeprefix("eval_") for v in VARIANTS & set(done[n])}

    report = subprocess.run(["make", "report", f"CONFIG={CONFIG}", "RUN=dt", f"RESULTS={tmp_path}"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "Project Goals vs Actual Results" in report.stdout and "Phase C, the DPO schedule" in report.stdout
    assert "Distillation: every model on every prompt variant" in report.stdout and "Phase C rounds:" in report.stdout
    assert "| 0 | base (M0) |" in report.stdout and "| 3 | Phase C round 1 (DPO) |" in report.stdout

    before = snapshot(run_dir)
    again = make_rounds(tmp_path)
    assert not any(script in again for script in SCRIPTS), again
    assert snapshot(run_dir) == before
