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


@pytest.mark.slow
def test_a_by_hand_run_on_the_server_leaves_its_token_usage_beside_its_output(tmp_path, tokenizer):
    """`create_data.py --steps generate --output FILE` (no run folder) through the launched server: FILE.config.json
    holds the server's own counts of what the run used."""
    out = tmp_path / "samples.jsonl"
    proc = subprocess.run([sys.executable, "create_data.py", *COMMON, *SERVER, "--steps", "generate", "--output",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.config.json", "samples.jsonl"]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    metrics = json.loads((tmp_path / "samples.config.json").read_text())["metrics"]
    assert len(records) == metrics["samples"] == 24  # configs/tiny.yaml: 12 prompts x 2
    # llama-cpp-python's server answers one choice per call (it drops `n`): each reply has its own count
    assert metrics["requests"] == metrics["completions"] == len(records)
    assert all(isinstance(r["num_tokens"], int) and "call_usage" not in r for r in records)
    assert metrics["generated_tokens"] == sum(r["num_tokens"] for r in records) > 0
    # the prompts as the student's tokenizer counts them, up to a BOS per request and a token or two of
    # tokenizer difference (llama.cpp tokenizes the GGUF's vocabulary itself)
    student = sum(len(tokenizer(r["prompt_text"], add_special_tokens=False)["input_ids"]) for r in records)
    assert abs(metrics["prompt_tokens"] - student) <= len(records) + student // 50, (metrics["prompt_tokens"], student)
