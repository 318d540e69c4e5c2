"""End to end: `make rounds` with `method: self_rewarding` on configs/self_rewarding_tiny.yaml, the real
embedded model. M0's evaluation and judge evaluation, M1 = SFT on IFT + EFT, then iteration 2 (M1's
candidates, M1's judgements, pairs, DPO). The run is killed with SIGKILL while M1 judges, then rerun:
no judgement is lost or written twice. A third `make rounds` runs no stage and touches no file.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.test_e2e import needs_setup, read_jsonl, snapshot

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/self_rewarding_tiny.yaml"
SCRIPTS = ("ift_data.py", "eft_data.py", "train.py", "create_data.py", "judge.py", "llm_judge.py", "pairs.py",
           "train_dpo.py", "judge_eval.py", "evaluate.py")


def make_rounds(results: Path, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    return subprocess.Popen(["make", "rounds", f"CONFIG={CONFIG}", "RUN=sr", f"RESULTS={results}"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, f"make rounds failed:\n{out[-6000:]}"
    return out


def kill_while_judging(results: Path) -> int:
    """Start the run, SIGKILL its whole process group once iteration 2's judgements are partly on disk;
    the number of judgement lines at the kill."""
    proc = make_rounds(results, start_new_session=True)
    iteration = results / "sr" / "iter_02"
    deadline = time.time() + 1500
    while time.time() < deadline:
        files = list(iteration.glob("judgements_*.jsonl"))
        lines = files[0].read_text().count("\n") if files else 0
        if lines and not (iteration / "judgements.done").exists():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return lines
        assert proc.poll() is None, f"the run ended before the kill:\n{proc.communicate()[0][-6000:]}"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("iteration 2's judging never started")


@pytest.mark.slow
def test_make_rounds_self_rewarding_killed_while_judging_then_resumed(tmp_path):
    needs_setup()
    at_kill = kill_while_judging(tmp_path)
    finish(make_rounds(tmp_path))
    run_dir = tmp_path / "sr"
    it1, it2 = run_dir / "iter_01", run_dir / "iter_02"
    assert {p.name for p in (run_dir / "iter_00").glob("*.done")} == {"judge_set.done", "judge_eval.done", "eval.done"}
    assert {p.name for p in it1.glob("*.done")} == {f"{s}.done" for s in (
        "ift_samples", "ift_judged", "ift", "eft_samples", "eft_judged", "eft", "model", "judge_eval", "eval")}
    assert {p.name for p in it2.glob("*.done")} == {f"{s}.done" for s in (
        "samples", "judged", "judgements", "pairs", "model", "judge_eval", "eval")}

    marker = {s: json.loads((it2 / f"{s}.done").read_text()) for s in ("samples", "judgements", "pairs", "model")}
    candidates = read_jsonl(it2 / marker["samples"]["output"])
    judgements = read_jsonl(it2 / marker["judgements"]["output"])
    judge_samples = marker["judgements"]["config"]["self_rewarding"]["judge_samples"]
    # nothing lost, nothing twice: every candidate judged exactly judge_samples times, in canonical order
    expected = [f"{c['id']}@{k}" for c in candidates for k in range(judge_samples)]
    assert [j["id"] for j in judgements] == expected
    assert 0 < at_kill <= len(expected)
    assert {j["judge"] for j in judgements} == {str(it1 / "model")}
    assert marker["judgements"]["metrics"]["judgements"] == len(expected)
    # the rerun sent only what was not on disk (lines may have landed between the count and the kill)
    skipped = marker["judgements"]["metrics"]["skipped_existing"]
    assert skipped >= at_kill and marker["judgements"]["metrics"]["generated"] == len(expected) - skipped

    pairs = read_jsonl(it2 / marker["pairs"]["output"])
    assert len(pairs) == marker["pairs"]["metrics"]["pairs"] >= 1
    for pair in pairs:
        assert pair["score_chosen"] > pair["score_rejected"] and pair["chosen"] != pair["rejected"]
        assert pair["prompt"] == next(c["prompt_text"] for c in candidates if c["id"] == pair["chosen_id"])
    assert marker["model"]["init_model"] == str(it1 / "model")
    assert marker["model"]["metrics"]["pairs"] == len(pairs)
    for name in ("config.json", "model.safetensors", "adapter/adapter_config.json", "selftrain_config.json"):
        assert (it2 / "model" / name).is_file(), name

    for n in (0, 1, 2):
        result = json.loads((run_dir / f"iter_{n:02d}" / json.loads(
            (run_dir / f"iter_{n:02d}" / "eval.done").read_text())["output"]).read_text())
        assert result["n"] == 6 and 0 <= result["prompt_level_strict"] <= result["instruction_level_loose"] + 1e-9
        judge = json.loads((run_dir / f"iter_{n:02d}" / "judge_eval.done").read_text())
        assert judge["judge_model"] == ("smollm2-135m" if n == 0 else str(run_dir / f"iter_{n:02d}" / "model"))

    before = snapshot(run_dir)
    again = finish(make_rounds(tmp_path))
    assert not any(script in again for script in SCRIPTS), again
    assert snapshot(run_dir) == before
