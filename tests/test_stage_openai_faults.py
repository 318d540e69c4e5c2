"""Stage 1 on the openai backend, through the real stage script, against a faulty server.

`create_data.py --steps generate` (configs/tiny.yaml: 12 prompts x 2 samples) runs as a
subprocess; the fake OpenAI server (tests/openai_fake.py) runs in a thread of this
process, so it sees and counts every request the stage sends. Covered: a stage killed
with SIGKILL midway (server honouring `n` and dropping it) resumes without losing,
duplicating or re-asking a sample, and repairs a torn last line; the API key reaches the
server and no file, log line or error message; a reply outside the protocol stops the
stage with one line naming the request, and a rerun completes the records; 429s are
retried and logged.

Every request is mapped back to the samples it asks for by its `seed`: the stage seeds
each request with its sample's own seed (a call for the n samples of a prompt carries
the first one's), and the 24 seeds are distinct. The stage runs with a model cache that
holds the embedded model's tokenizer and config but no weights: an openai backend needs
only the student's tokenizer, and a stage that tried to load weights would fail here.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from selftrain.config import load_config
from selftrain.generation import request_seed
from selftrain.generation.jobs import stage_seed

from openai_fake import FakeOpenAI, fake_servers  # tests/ is on sys.path (pytest prepends a test file's folder)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "tiny.yaml"
SECRET = "sk-test-SECRET-XYZ"
IDS = [f"arith-train-{p:06d}#{j}" for p in range(12) for j in range(2)]  # canonical order
SEED = stage_seed(load_config(CONFIG), 1)
SAMPLE_OF_SEED = {request_seed(SEED, i) & 0x7FFF_FFFF: i for i in IDS}
assert len(SAMPLE_OF_SEED) == len(IDS)
TIMEOUT = 120  # seconds: a stage that hangs fails the test instead of the suite


def seed31(sample: str) -> int:
    return request_seed(SEED, sample) & 0x7FFF_FFFF


def asked(body: dict) -> list[str]:
    """The samples one request asks for: the seeded one and, with n, the next n-1 of its prompt."""
    prompt_id, j = SAMPLE_OF_SEED[body["seed"]].split("#")
    return [f"{prompt_id}#{int(j) + k}" for k in range(body.get("n", 1))]


def answered(body: dict, honour_n: bool) -> list[str]:
    """The samples the fake's well-formed reply to `body` answers (a server dropping n: the first only)."""
    return asked(body) if honour_n else asked(body)[:1]


@pytest.fixture(scope="module")
def stage_env(weightless_env):
    return weightless_env


@pytest.fixture
def fake():
    with fake_servers() as start:
        yield start


def command(run_dir: Path, url: str) -> list[str]:
    return [sys.executable, "create_data.py", "--config", str(CONFIG), "--run_dir", str(run_dir),
            "--iteration", "1", "--steps", "generate", "--set", "generation.backend=openai",
            "--set", f"generation.base_url={url}", "--set", "generation.api=completions"]


def run_stage(run_dir: Path, url: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(command(run_dir, url), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def samples_file(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "iter_01").glob("samples_*.jsonl"))
    assert len(found) <= 1, found
    return found[0] if found else None


def complete_lines(run_dir: Path) -> list[str]:
    """The file's newline-terminated lines (a line being written is not one yet)."""
    path = samples_file(run_dir)
    if path is None:
        return []
    data = path.read_bytes()
    return data[:data.rfind(b"\n") + 1].decode().splitlines()


def ids_of(lines: list[str]) -> list[str]:
    return [json.loads(line)["id"] for line in lines]


def wait_for(condition, proc: subprocess.Popen | None = None, seconds: float = TIMEOUT) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc is None or proc.poll() is None, f"the stage ended early ({proc.returncode})"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The stage's one-line error: exit code 2, one `error:` line, the last on stderr."""
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and lines[-1] == errors[0], result.stderr[-3000:]
    return errors[0]


def check_finished(run_dir: Path, server: FakeOpenAI, honour_n: bool = True) -> list[dict]:
    """24 records in canonical order, each the reply to its own sample's request; the marker names the file."""
    marker = json.loads((run_dir / "iter_01" / "samples.done").read_text())
    path = samples_file(run_dir)
    assert marker["output"] == path.name
    records = [json.loads(line) for line in path.read_text().split("\n") if line]
    assert [r["id"] for r in records] == IDS  # none lost, none twice, canonical order
    prompt_text = {r["id"]: r["prompt_text"] for r in records}
    for r in records:
        first = f"{r['prompt_id']}#0"  # a call for both samples of a prompt: seeded with sample 0, choice 1
        assert r["response"] in (f"{r['prompt_text']}|seed={seed31(r['id'])}|i=0",
                                 f"{r['prompt_text']}|seed={seed31(first)}|i=1"), r
        assert r["response"].endswith("i=0") or (honour_n and r["sample_idx"] == 1)
    for _, _, body in server.calls:  # every request's prompt is the rendered prompt of the sample it seeds
        assert body["prompt"] == prompt_text[asked(body)[0]]
    return records


@pytest.mark.parametrize("honour_n, served", [(True, 3), (False, 5)], ids=["n-honoured", "n-dropped"])
def test_a_stage_killed_midway_resumes_without_losing_repeating_or_re_asking(fake, stage_env, tmp_path,
                                                                             honour_n, served):
    """The server answers `served` calls, then holds every reply: the kill finds a known set on disk."""
    release, lock, served_calls = threading.Event(), threading.Lock(), []

    def reply(n, path, body, headers):
        with lock:
            hold = len(served_calls) >= served
            if not hold:
                served_calls.append(n)
        if hold:
            release.wait(TIMEOUT)
        return None

    server = fake(reply, honour_n=honour_n)
    run_dir = tmp_path / "run"
    expected = served * (2 if honour_n else 1)  # records the served calls answer
    with open(tmp_path / "run1.err", "w+") as err:
        proc = subprocess.Popen(command(run_dir, server.url), cwd=REPO, env=stage_env, stdout=subprocess.DEVNULL,
                                stderr=err)
        try:
            wait_for(lambda: len(complete_lines(run_dir)) >= expected, proc)
        except AssertionError:
            proc.kill()
            proc.wait()
            err.seek(0)
            raise AssertionError(err.read()[-3000:]) from None
        os.kill(proc.pid, signal.SIGKILL)  # nothing more can arrive: every other reply is held
        assert proc.wait() == -signal.SIGKILL
    on_disk = ids_of(complete_lines(run_dir))
    assert len(on_disk) == len(set(on_disk)) == expected
    assert set(on_disk) == {s for n in served_calls for s in answered(server.calls[n][2], honour_n)}
    assert not (run_dir / "iter_01" / "samples.done").exists()

    # What a kill in the middle of a write leaves: the start of the next record, no newline.
    torn = next(i for i in IDS if i not in on_disk)
    record = {**json.loads(complete_lines(run_dir)[0]), "id": torn, "prompt_id": torn.split("#")[0],
              "sample_idx": int(torn[-1])}
    with open(samples_file(run_dir), "a") as handle:
        handle.write(json.dumps(record)[:150])
    release.set()

    calls_before = len(server.calls)
    result = run_stage(run_dir, server.url, stage_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming: {expected} of 24 already written, {24 - expected} to go" in result.stderr
    rerun = [body for _, _, body in server.calls[calls_before:]]
    assert not {s for body in rerun for s in asked(body)} & set(on_disk)  # nothing on disk asked again
    again = [s for body in rerun for s in answered(body, honour_n)]
    assert sorted(again) == sorted(set(IDS) - set(on_disk))  # each missing sample (the torn one too) once
    check_finished(run_dir, server, honour_n)
    marker = json.loads((run_dir / "iter_01" / "samples.done").read_text())
    assert marker["metrics"]["generated"] == 24 - expected and marker["metrics"]["skipped_existing"] == expected
    assert marker["metrics"]["backend"]["server_ignores_n"] is (not honour_n)


@pytest.mark.parametrize("honour_n", [True, False], ids=["n-honoured", "n-dropped"])
def test_a_by_hand_run_leaves_its_token_usage_beside_its_output(fake, stage_env, tmp_path, honour_n):
    """`create_data.py --steps generate --output FILE`, no run folder: FILE.config.json holds what the server
    said it used (the fake's usage: 3 prompt tokens per call, 5 completion tokens per choice); a sample of a
    call with `n` carries the call's usage whole, a sample of its own call its own count."""
    server = fake(honour_n=honour_n)
    out = tmp_path / "by_hand" / "samples.jsonl"
    command = [sys.executable, "create_data.py", "--config", str(CONFIG), "--steps", "generate", "--output", str(out),
               "--set", "generation.backend=openai", "--set", f"generation.base_url={server.url}",
               "--set", "generation.api=completions"]
    result = subprocess.run(command, cwd=REPO, env=stage_env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.parent.iterdir()) == ["samples.config.json", "samples.jsonl"]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == IDS
    metrics = json.loads((out.parent / "samples.config.json").read_text())["metrics"]
    calls = len(server.calls)
    assert calls == (12 if honour_n else 24)  # a server dropping n answers each call with one choice
    assert (metrics["requests"], metrics["completions"]) == (calls, 24)
    assert (metrics["prompt_tokens"], metrics["generated_tokens"]) == (3 * calls, 5 * 24)
    if honour_n:
        assert all(r["num_tokens"] is None and r["call_usage"] == {"samples": 2, "prompt_tokens": 3,
                                                                   "completion_tokens": 10} for r in records)
    else:
        assert all(r["num_tokens"] == 5 and "call_usage" not in r for r in records)


def test_the_api_key_reaches_the_server_and_no_file_or_log(fake, stage_env, tmp_path):
    deny = threading.Event()
    deny.set()

    def reply(n, path, body, headers):  # a server that quotes what it was sent (twice: a cut cannot hide it)
        if deny.is_set():
            said = headers.get("authorization", "")
            return 401, {}, json.dumps({"error": {"message": f"invalid key: {said} {'.' * 40} {said}",
                                                  "type": "invalid_request_error", "code": "invalid_api_key"}})
        return None

    server = fake(reply)
    env = {**stage_env, "OPENAI_API_KEY": SECRET}  # generation.api_key_env's default
    run_dir = tmp_path / "run"

    def assert_nowhere(result):
        assert "SECRET-XYZ" not in result.stdout + result.stderr
        files = [p for p in run_dir.rglob("*") if p.is_file()]
        assert all(b"SECRET-XYZ" not in p.read_bytes() for p in files), files
        return files

    result = run_stage(run_dir, server.url, env)
    error = error_line(result)
    assert "HTTP 401: invalid key: Bearer <redacted>" in error and "check the key in $OPENAI_API_KEY" in error
    assert server.calls and all(headers["authorization"] == f"Bearer {SECRET}" for _, headers, _ in server.calls)
    assert_nowhere(result)
    assert complete_lines(run_dir) == [] and not (run_dir / "iter_01" / "samples.done").exists()

    deny.clear()
    calls_before = len(server.calls)
    result = run_stage(run_dir, server.url, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {headers["authorization"] for _, headers, _ in server.calls[calls_before:]} == {f"Bearer {SECRET}"}
    assert "no API key" not in result.stderr
    files = assert_nowhere(result)
    assert run_dir / "iter_01" / "samples.done" in files
    check_finished(run_dir, server)
    marker = json.loads((run_dir / "iter_01" / "samples.done").read_text())
    assert marker["config"]["generation"]["api_key_env"] == "OPENAI_API_KEY"  # the variable's name, not the key


def test_a_garbage_reply_stops_the_stage_and_a_rerun_completes_the_records(fake, stage_env, tmp_path):
    good = 4  # calls answered well; the next gets `{"choices": []}` once their records are on disk
    run_dir = tmp_path / "run"
    healthy, release = threading.Event(), threading.Event()

    def reply(n, path, body, headers):
        if healthy.is_set() or n < good:
            return None
        if n == good:
            wait_for(lambda: len(complete_lines(run_dir)) >= 2 * good)
            return 200, {}, '{"choices": []}'
        release.wait(TIMEOUT)  # the calls after it write nothing: the failed run leaves a known set
        return None

    server = fake(reply)
    result = run_stage(run_dir, server.url, stage_env)
    error = error_line(result)
    key = asked(server.calls[good][2])[0]
    assert f"request {key} (one call for 2 samples): bad reply: 0 choices for n=2" in error
    kept = complete_lines(run_dir)
    assert len(kept) == 2 * good and samples_file(run_dir).read_text().endswith("\n")
    assert set(ids_of(kept)) == {s for _, _, body in server.calls[:good] for s in asked(body)}
    assert key not in ids_of(kept) and not (run_dir / "iter_01" / "samples.done").exists()

    healthy.set()
    release.set()
    calls_before = len(server.calls)
    result = run_stage(run_dir, server.url, stage_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming: {2 * good} of 24 already written" in result.stderr
    again = [s for _, _, body in server.calls[calls_before:] for s in asked(body)]
    assert sorted(again) == sorted(set(IDS) - set(ids_of(kept)))  # the rest, each once; nothing kept re-asked
    check_finished(run_dir, server)
    assert set(kept) <= set(samples_file(run_dir).read_text().splitlines())  # kept byte for byte


def test_429_is_retried_and_logged_and_the_stage_completes(fake, stage_env, tmp_path):
    def reply(n, path, body, headers):
        if n < 3:
            return 429, {"Retry-After": "0"}, json.dumps({"error": {"message": "rate limited"}})
        return None

    server = fake(reply)
    run_dir = tmp_path / "run"
    result = run_stage(run_dir, server.url, stage_env)
    assert result.returncode == 0, result.stderr[-3000:]
    # searched in the whole of stderr: log lines from concurrent calls may share a line (see the report)
    retried = re.findall(r"request (\S+): HTTP 429; retry (\d+)/5", result.stderr)
    limited = [body for _, _, body in server.calls[:3]]
    # each 429 was followed by one retry of the same call, logged with the call's key
    assert sorted(key for key, _ in retried) == sorted(asked(body)[0] for body in limited), result.stderr[-3000:]
    assert all(any(later == body for _, _, later in server.calls[3:]) for body in limited)
    assert len(server.calls) == 12 + 3  # one call per prompt (n=2), three of them twice
    check_finished(run_dir, server)
