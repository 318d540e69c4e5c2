"""Stage 1 through a real OpenAI-compatible server: llama.cpp's `llama_cpp.server`,
launched by the stage itself (`generation.server: llama_cpp`) on the embedded
model's GGUF file, then judge, select and train on what it wrote, next to the
same stages on the in-house engine's samples.

The two runs differ only in who wrote the replies: the records have the same ids,
the same fields and the same prompt_text (rendered with the student's
tokenizer), and every later stage treats them alike.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "tiny.yaml"
# every sample that stopped is kept: the comparison is about the records, not about how many are right
# (Expert Iteration's chain: no rationalization stage between judge and select)
COMMON = ["--config", str(CONFIG), "--iteration", "1", "--set", "filter_strategy=none", "--set", "num_train_epochs=0.5",
          "--set", "method=expert_iteration"]
SERVER = ["--set", "generation.backend=openai", "--set", "generation.server=llama_cpp"]

pytest.importorskip("llama_cpp", reason="llama-cpp-python is a pinned test dependency (make setup)")


def stage(script: str, run_dir: Path, *extra: str) -> None:
    proc = subprocess.run([sys.executable, script, *COMMON, "--run_dir", str(run_dir), *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stderr[-3000:]}"


def marker(run_dir: Path, name: str) -> dict:
    return json.loads((run_dir / "iter_01" / f"{name}.done").read_text())


def records(run_dir: Path, name: str) -> list[dict]:
    path = run_dir / "iter_01" / marker(run_dir, name)["output"]
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama_stage")
    out = {}
    for name, extra in (("engine", []), ("server", SERVER)):
        run_dir = root / name
        stage("create_data.py", run_dir, "--steps", "generate", *extra)
        for script in ("judge.py", "select_data.py", "train.py"):
            stage(script, run_dir)
        out[name] = run_dir
    return out


@pytest.mark.slow
def test_server_samples_are_the_engines_records_written_by_another_backend(runs):
    engine, server = records(runs["engine"], "samples"), records(runs["server"], "samples")
    assert [r["id"] for r in server] == [r["id"] for r in engine]  # same ids, same canonical order
    assert [r["prompt_text"] for r in server] == [r["prompt_text"] for r in engine]
    assert [set(r) for r in server] == [set(r) for r in engine]
    for r in server:
        assert isinstance(r["response"], str) and r["finish_reason"] in ("stop", "length")
        assert r["num_tokens"] is None or 0 <= r["num_tokens"] <= 32
    # the replies are the server's own (Q4_1 weights, its own sampler), not a copy of the engine's
    assert [r["response"] for r in server] != [r["response"] for r in engine]

    described = marker(runs["server"], "samples")["metrics"]["backend"]
    assert described["backend"] == "openai" and described["server"] == "llama_cpp"
    assert described["server_model"].endswith(".gguf")
    assert marker(runs["engine"], "samples")["metrics"]["backend"]["backend"] == "selftrain"  # auto
    assert described["chosen_by"] == "set by generation.backend: openai"


@pytest.mark.slow
def test_server_samples_judge_select_and_train_like_the_engines(runs):
    for name, run_dir in runs.items():
        judged = records(run_dir, "judged")
        assert all(isinstance(r["is_correct"], bool) for r in judged), name
        train = records(run_dir, "train")
        stopped = {r["id"] for r in judged if r["finish_reason"] == "stop"}
        assert train and {r["id"] for r in train} <= stopped, name
        assert all(r["prompt_spec"]["k"] == 1 for r in train)
        model = marker(run_dir, "model")
        assert model["metrics"]["train_examples"] == len(train), name
        assert (run_dir / "iter_01" / "model" / "model.safetensors").is_file()
