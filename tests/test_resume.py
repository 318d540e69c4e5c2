"""A generation killed with SIGKILL resumes without losing or duplicating a record.

`create_data.py --steps generate --output X` (by hand, one step: X is the samples
file itself) is killed once it has written a few records, a torn half line is
appended as if the kill had landed mid-write, and the same command is rerun.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
N_PROMPTS, N_SAMPLES, MAX_NEW = 60, 2, 32  # ~0.1-0.2 s a record on 2 busy CPU cores


def complete_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    text = path.read_text()
    return text.splitlines()[: text.count("\n")]


def test_sigkill_midway_then_resume(tmp_path, tiny_model_dir):
    config = tmp_path / "resume.json"
    config.write_text(json.dumps({
        "task": {"name": "arithmetic", "n_train": N_PROMPTS, "n_test": 1, "difficulties": ["easy"], "seed": 0},
        "k": 0, "num_generations_per_prompt": N_SAMPLES, "max_new_tokens": MAX_NEW, "batch_size": 4,
    }))
    out = tmp_path / "train.jsonl"
    cmd = [sys.executable, "create_data.py", "--config", str(config), "--model_name", tiny_model_dir,
           "--set", "dtype=fp32", "--output", str(out), "--steps", "generate"]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")

    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while len(complete_lines(out)) < 5:
            assert proc.poll() is None, f"finished before it could be killed:\n{proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "no records after 300 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    written = complete_lines(out)
    expected = {f"arith-train-{i:06d}#{j}" for i in range(N_PROMPTS) for j in range(N_SAMPLES)}
    assert 5 <= len(written) < len(expected), "the kill must land midway"
    assert not (tmp_path / "train.config.json").exists()  # no completion record for a killed run
    survived = [json.loads(line) for line in written]
    # A torn last line, as if the process had died halfway through a write.
    with open(out, "a", encoding="utf-8") as handle:
        handle.write('{"id": "arith-train-000059#1", "response": "half a rec')

    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {len(written)} of {len(expected)} already written" in rerun.stderr

    text = out.read_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    records = [json.loads(line) for line in lines]  # every line is valid JSON
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "duplicate ids"
    assert set(ids) == expected
    assert len(records) == N_PROMPTS * N_SAMPLES
    assert records[: len(survived)] == survived  # what was written before the kill is kept as is
    for r in records:
        assert r["id"] == f"{r['prompt_id']}#{r['sample_idx']}"
        assert isinstance(r["response"], str) and r["finish_reason"] in ("stop", "length")
        assert 0 <= r["num_tokens"] <= MAX_NEW

    sidecar = json.loads((tmp_path / "train.config.json").read_text())
    assert sidecar["metrics"]["skipped_existing"] == len(written)
    assert sidecar["metrics"]["generated"] == len(expected) - len(written)
    assert sidecar["metrics"]["samples"] == len(expected)
