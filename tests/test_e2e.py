"""End to end: `make iter` with the real embedded model on configs/tiny.yaml.

Iteration 1, then iteration 2 (generating with iteration 1's model), then
iteration 2 again, which must run no stage and touch no file; the same config
with `method: expert_iteration` runs its own chain (no rationalization); an
unknown method is a clear error naming the methods that exist.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ["samples", "judged", "rationales", "train", "model", "eval"]
SCRIPTS = ("create_data.py", "judge.py", "rationalize.py", "select_data.py", "train.py", "evaluate.py")
N_TRAIN, N_TEST, N_SAMPLES = 12, 8, 2  # configs/tiny.yaml


def make(run_results: Path, n: int, config: str = "configs/tiny.yaml", check: bool = True,
         run: str = "e2e") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    proc = subprocess.run(["make", "iter", f"N={n}", f"CONFIG={config}", f"RUN={run}",
                           f"RESULTS={run_results}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1800)
    if check:
        assert proc.returncode == 0, f"make iter N={n} failed\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


def stage_commands(stdout: str) -> list[tuple[str, int, str]]:
    """(script, iteration, --steps value or '') for every stage command make echoed."""
    found = []
    for line in stdout.splitlines():
        m = re.search(r"(create_data|judge|rationalize|select_data|train|evaluate)\.py .*--iteration (\d+)"
                      r"(?: --steps (\w+))?", line)
        if m:
            found.append((m.group(1), int(m.group(2)), m.group(3) or ""))
    return found


EXPECTED_ITERATION = [("create_data", "generate"), ("judge", ""), ("rationalize", ""), ("select_data", ""),
                      ("train", ""), ("evaluate", "")]


def snapshot(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in sorted(directory.rglob("*"))}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_iteration(run_dir: Path, n: int, stages: list[str] = STAGES) -> None:
    it = run_dir / f"iter_{n:02d}"
    assert sorted(p.name for p in it.glob("*.done")) == sorted(f"{s}.done" for s in stages)
    markers = {s: json.loads((it / f"{s}.done").read_text()) for s in stages}
    for stage, marker in markers.items():
        assert (it / marker["output"]).exists(), f"{stage}.done names a missing {marker['output']}"
        assert marker["config"]["name"] == "tiny"
    # generation.backend auto: the exact engine for sampling and evaluation, and the marker says why
    for stage in ("samples", "eval"):
        described = markers[stage]["metrics"]["backend"]
        assert described["backend"] == "selftrain", (stage, described)
        assert described["chosen_by"].startswith("auto on ") and described["cpu_kind"], described
        assert described["linear"] in ("float32", "bfloat16"), described

    samples = read_jsonl(it / markers["samples"]["output"])
    assert len(samples) == N_TRAIN * N_SAMPLES
    assert {r["id"] for r in samples} == {f"arith-train-{i:06d}#{j}" for i in range(N_TRAIN) for j in range(N_SAMPLES)}
    generator = "smollm2-135m" if n == 1 else str(run_dir / f"iter_{n - 1:02d}" / "model")
    assert markers["samples"]["model"] == generator
    assert {r["generator"] for r in samples} == {generator}

    judged = read_jsonl(it / markers["judged"]["output"])
    assert {r["id"] for r in judged} == {r["id"] for r in samples}
    assert all(isinstance(r["is_correct"], bool) for r in judged)
    assert markers["judged"]["metrics"]["correct"] == sum(r["is_correct"] for r in judged)

    train_rows = read_jsonl(it / markers["train"]["output"])
    assert len(train_rows) == markers["train"]["metrics"]["train_examples"] >= 1
    assert all(r["prompt_spec"]["k"] == 1 for r in train_rows)
    assert markers["model"]["output"] == "model"
    assert markers["model"]["metrics"]["train_examples"] == len(train_rows)
    for name in ("config.json", "model.safetensors", "adapter/adapter_config.json", "selftrain_config.json"):
        assert (it / "model" / name).is_file(), name

    result = json.loads((it / markers["eval"]["output"]).read_text())
    assert result["n"] == N_TEST and len(result["results"]) == N_TEST
    assert 0.0 <= result["accuracy"] <= 1.0
    assert result["accuracy"] == round(sum(r["is_correct"] for r in result["results"]) / N_TEST, 4)
    assert result["iteration"] == n and result["model"] == str(it / "model")
    assert set(result["per_difficulty"]) == {"easy"}


def needs_setup() -> None:
    installed = REPO / ".venv" / ".installed"
    if not installed.is_file() or installed.stat().st_mtime < (REPO / "requirements.txt").stat().st_mtime:
        pytest.skip("make setup has not been run (make would install the environment)")


def config_with(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "tiny.yaml"  # the same name: markers say config name "tiny"
    path.write_text((REPO / "configs" / "tiny.yaml").read_text() + extra)
    return path


@pytest.mark.slow
def test_method_expert_iteration_runs_its_own_chain(tmp_path):
    needs_setup()
    config = config_with(tmp_path, "\nmethod: expert_iteration\n")
    proc = make(tmp_path / "results", 1, config=str(config))
    expected = [(s, 1, st) for s, st in EXPECTED_ITERATION if s != "rationalize"]
    assert stage_commands(proc.stdout) == expected
    run_dir = tmp_path / "results" / "e2e"
    check_iteration(run_dir, 1, [s for s in STAGES if s != "rationales"])
    assert not list((run_dir / "iter_01").glob("rationales*"))
    train = json.loads((run_dir / "iter_01" / "train.done").read_text())
    assert "input_rationales" not in train and train["config"]["method"] == "expert_iteration"


def test_unknown_method_is_a_clear_error(tmp_path):
    needs_setup()
    config = config_with(tmp_path, "\nmethod: self_rewardin\n")
    proc = make(tmp_path / "results", 1, config=str(config), check=False)
    assert proc.returncode != 0
    assert "method: 'self_rewardin' is not one of star, expert_iteration" in proc.stderr, proc.stderr
    assert not (tmp_path / "results").exists()


def test_every_method_has_its_chain_file():
    from selftrain.config import METHODS

    chains = {p.stem for p in (REPO / "mk").glob("*.mk")} - {"common"}
    assert chains == set(METHODS)


@pytest.mark.slow
def test_make_iter_two_iterations_then_nothing_to_do(tmp_path):
    needs_setup()
    run_dir = tmp_path / "e2e"

    first = make(tmp_path, 1)
    assert stage_commands(first.stdout) == [(s, 1, st) for s, st in EXPECTED_ITERATION]
    check_iteration(run_dir, 1)
    assert sorted(p.name for p in run_dir.iterdir()) == ["iter_01"]

    second = make(tmp_path, 2)
    assert stage_commands(second.stdout) == [(s, 2, st) for s, st in EXPECTED_ITERATION]
    check_iteration(run_dir, 2)
    assert sorted(p.name for p in run_dir.iterdir()) == ["iter_01", "iter_02"]

    before = snapshot(run_dir)
    third = make(tmp_path, 2)
    assert not any(script in third.stdout + third.stderr for script in SCRIPTS), third.stdout
    assert "is up to date" in third.stdout or "Nothing to be done" in third.stdout, third.stdout
    assert snapshot(run_dir) == before
