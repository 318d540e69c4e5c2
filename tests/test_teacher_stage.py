"""The teacher stage (teacher.py) through real HTTP: a fake OpenAI-compatible server on loopback that
fails, rate-limits and answers garbage (tests/openai_fake.py, in a thread of this process, so every
request is seen).

Covered: a stage killed with SIGKILL midway resumes without losing, duplicating or re-asking a draft;
429 and 500 are retried; a garbage reply stops the stage with one line and a rerun completes; the key
reaches the server and no file, log or error; token usage and the estimated cost are in the record.
The seed's `.env` alone (GPT4_MODEL, no other teacher setting) asks OpenAI's API with chat completions,
and without OPENAI_API_KEY stops before any connection (a recording proxy on loopback sees none; with a
key it sees the CONNECT to api.openai.com); $OPENAI_BASE_URL points it at another server. A target the
student would be trained on (built from an agreeing reply) that its `max_new_tokens` cannot hold, the
student's tokenizer counting, stops the stage naming the reply's line; a rerun with a larger limit sends
nothing and finishes.
"""
from __future__ import annotations

import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from openai_fake import fake_servers  # tests/ is on sys.path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "distill_tiny.yaml"
SECRET = "sk-teacher-SECRET-XYZ"
TIMEOUT = 120
N = 8
VERDICT = ("## Teaching Analysis\nThe student tried.\n\n## Step-by-Step Reasoning\n1. Look.\n\n"
           "## Final Assessment\nBased on this analysis, the answer is: **{}**")


def question_text(i: int) -> str:
    return f"Is {i + 11} * 4 more than 60?"


@pytest.fixture
def drafts(tmp_path) -> Path:
    path = tmp_path / "student_drafts.jsonl"
    rows = [{"id": f"q{i}", "split": "train", "prompt": question_text(i),  # the tiny config's teacher sees facts
             "metadata": {"expected_answer": "yes" if i % 2 == 0 else "no", "facts": [f"{i + 11} * 4 = {4 * i + 44}"]},
             "response": f"Answer: No - draft {i}\nQuestions: what is {i + 11} * 4?", "draft_answer": "no"}
            for i in range(N)] + [{"id": "t0", "split": "test", "prompt": question_text(99),
                                   "metadata": {"expected_answer": "yes", "facts": ["110 * 4 = 440"]},
                                   "response": "Answer: Yes - x"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def stage_env(weightless_env):
    """No model weights (an API teacher needs none), the teacher's key in TEACHER_KEY."""
    return {**weightless_env, "TEACHER_KEY": SECRET}


def command(drafts: Path, output: Path, url: str, *extra: str) -> list[str]:
    return [sys.executable, "teacher.py", "--config", str(CONFIG), "--input", str(drafts), "--output", str(output),
            "--set", "distill.teacher_model=gpt-test", "--set", "distill.teacher_generation.backend=openai",
            "--set", f"distill.teacher_generation.base_url={url}", "--set", "distill.teacher_generation.api=chat",
            "--set", "distill.teacher_generation.api_key_env=TEACHER_KEY",
            "--set", "distill.teacher_generation.max_retries=3", "--set", "distill.teacher_requires_key=always",
            "--set", "distill.price_input_per_mtok=2.0", "--set", "distill.price_output_per_mtok=8.0", *extra]


def run_stage(drafts, output, url, env, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(command(drafts, output, url, *extra), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def which(body: dict) -> str:
    """The draft a request is about (its question is in the prompt)."""
    text = body["messages"][-1]["content"]
    return next(f"q{i}" for i in range(N) if question_text(i) in text)


def teacher_reply(body: dict) -> tuple[int, dict, str]:
    i = int(which(body)[1:])
    verdict = "YES" if i % 3 else "NO"
    return 200, {}, json.dumps({"id": "c", "object": "chat.completion", "model": body["model"],
                                "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": VERDICT.format(verdict)}}],
                                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})


def lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    data = path.read_bytes()
    return data[:data.rfind(b"\n") + 1].decode().splitlines()


def error_line(result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and result.stderr.splitlines()[-1] == errors[0], result.stderr[-3000:]
    return errors[0]


def check_finished(output: Path) -> list[dict]:
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(N)]  # every training draft once, in order; no test draft
    for r in rows:
        assert r["teacher_answer"] == ("yes" if int(r["id"][1:]) % 3 else "no")
        assert r["teacher"] == "gpt-test" and "Student draft:\nAnswer: No - draft" in r["prompt_text"]
        assert f"Facts: {int(r['id'][1:]) + 11} * 4 = " in r["prompt_text"]  # distill_tiny: teacher_sees_facts
    return rows


def test_a_teacher_stage_killed_midway_resumes_without_losing_repeating_or_re_asking(stage_env, drafts, tmp_path):
    served, release, lock = [], threading.Event(), threading.Lock()

    def reply(n, path, body, headers):
        with lock:
            hold = len(served) >= 3
            if not hold:
                served.append(which(body))
        if hold:
            release.wait(TIMEOUT)
        return teacher_reply(body)

    output = tmp_path / "teacher_outputs.jsonl"
    with fake_servers() as start:
        server = start(reply)
        proc = subprocess.Popen(command(drafts, output, server.url), cwd=REPO, env=stage_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + TIMEOUT
        while len(lines(output)) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, "the stage ended early or hung"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        on_disk = [json.loads(line)["id"] for line in lines(output)]
        assert sorted(on_disk) == sorted(served)
        release.set()
        before = len(server.calls)
        result = run_stage(drafts, output, server.url, stage_env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"resuming: 3 of {N} already written, {N - 3} to go" in result.stderr
        again = [which(body) for _, _, body in server.calls[before:]]
        assert sorted(again) == sorted(set(f"q{i}" for i in range(N)) - set(on_disk))  # the rest, each once
        check_finished(output)
        assert all(headers["authorization"] == f"Bearer {SECRET}" for _, headers, _ in server.calls)
    record = json.loads(output.with_name("teacher_outputs.config.json").read_text())["metrics"]
    assert record["generated"] == N - 3 and record["skipped_existing"] == 3
    assert record["prompt_tokens"] == 100 * (N - 3) and record["generated_tokens"] == 20 * (N - 3)
    assert record["estimated_cost_usd"] == round((100 * 2.0 + 20 * 8.0) * (N - 3) / 1e6, 6)
    assert record["unparsable"] == 0 and record["replies"] == N
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or b"SECRET-XYZ" not in path.read_bytes(), path
    assert "SECRET-XYZ" not in result.stderr + result.stdout


def test_429_and_500_are_retried_and_garbage_stops_the_stage_until_a_rerun_completes(stage_env, drafts, tmp_path):
    healthy = threading.Event()

    def reply(n, path, body, headers):
        if n == 0:
            return 429, {"Retry-After": "0"}, json.dumps({"error": {"message": "rate limited"}})
        if n == 1:
            return 500, {}, json.dumps({"error": {"message": "boom"}})
        if not healthy.is_set() and which(body) == "q5":
            return 200, {}, "this is not json"
        return teacher_reply(body)

    output = tmp_path / "teacher_outputs.jsonl"
    with fake_servers() as start:
        server = start(reply)
        result = run_stage(drafts, output, server.url, stage_env, "--set", "distill.teacher_generation.max_concurrency=1")
        error = error_line(result)
        assert "q5" in error and "SECRET-XYZ" not in result.stderr
        # both faults hit q0's call: the client retries it twice
        assert "request q0: HTTP 429; retry 1/3" in result.stderr and "request q0: HTTP 500; retry 2/3" in result.stderr
        kept = [json.loads(line)["id"] for line in lines(output)]
        assert "q5" not in kept and len(kept) == len(set(kept)) == 5  # q0..q4 answered in order, one at a time
        healthy.set()
        before = len(server.calls)
        result = run_stage(drafts, output, server.url, stage_env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert sorted(which(body) for _, _, body in server.calls[before:]) == ["q5", "q6", "q7"]
    check_finished(output)


def test_the_seed_dry_run_sends_nothing_and_a_missing_key_stops_before_any_request(stage_env, drafts, tmp_path):
    output = tmp_path / "teacher_outputs.jsonl"
    with fake_servers() as start:
        server = start(lambda n, path, body, headers: teacher_reply(body))
        result = subprocess.run(command(drafts, output, server.url), cwd=REPO, capture_output=True, text=True,
                                timeout=TIMEOUT, env={**stage_env, "DRY_RUN": "True", "GPT4_MODEL": "gpt-4.1-nano"})
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"would send {N} requests (0 already answered) to gpt-test" in result.stdout  # --set wins over GPT4_MODEL
        assert not server.calls and not output.exists()
        no_key = {k: v for k, v in stage_env.items() if k != "TEACHER_KEY"}
        error = error_line(run_stage(drafts, output, server.url, no_key))
        assert "$TEACHER_KEY is not set" in error and "nothing was sent" in error
        assert not server.calls and not output.exists()
        assert run_stage(drafts, output, server.url, stage_env).returncode == 0
        error = error_line(subprocess.run(command(drafts, output, server.url), cwd=REPO, capture_output=True,
                                          text=True, timeout=TIMEOUT, env={**stage_env, "DRY_RUN": "True"}))
        assert "nothing would be sent" in error


@pytest.mark.slow
def test_a_real_llama_cpp_server_is_the_teacher_and_a_rerun_sends_nothing(drafts, tmp_path):
    """The teacher stage launches llama.cpp's OpenAI-compatible server on loopback on the embedded model
    (`teacher_generation.server: llama_cpp`, chat API) and asks it about every training draft; a rerun
    without the marker finds every reply on disk and sends no request."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is a pinned test dependency (make setup)")
    output = tmp_path / "teacher_outputs.jsonl"
    cmd = [sys.executable, "teacher.py", "--config", str(CONFIG), "--input", str(drafts), "--output", str(output),
           "--set", "distill.teacher_model=smollm2-135m", "--set", "distill.teacher_generation.backend=openai",
           "--set", "distill.teacher_generation.server=llama_cpp", "--set", "distill.teacher_generation.api=chat",
           "--set", "distill.teacher_max_tokens=24"]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}  # loopback: no key needed
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(N)]
    for r in rows:
        assert r["response"].strip() and r["finish_reason"] in ("stop", "length") and r["teacher"] == "smollm2-135m"
        assert r["teacher_answer"] in ("yes", "no", None)
        assert question_text(int(r["id"][1:])) in r["prompt_text"]
    sidecar = output.with_name("teacher_outputs.config.json")
    metrics = json.loads(sidecar.read_text())["metrics"]
    assert metrics["requests"] == N and metrics["skipped_existing"] == 0
    assert metrics["prompt_tokens"] > 100 * N and 0 < metrics["generated_tokens"] <= 24 * N  # the server's usage
    assert metrics["replies"] == N and metrics["unparsable"] == sum(r["teacher_answer"] is None for r in rows)
    sidecar.unlink()
    before = output.read_bytes()
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert output.read_bytes() == before
    metrics = json.loads(sidecar.read_text())["metrics"]
    assert metrics["skipped_existing"] == N and metrics["requests"] == 0 and metrics["generated"] == 0


# --- the seed's .env alone; the student's token limit -----------------------------------------------

GPT4_MODEL = "gpt-4.1-nano-2025-04-14"


def env_only(stage_env: dict, **extra: str) -> dict:
    """The stage's environment with the seed's GPT4_MODEL and nothing else about the teacher."""
    drop = ("TEACHER_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "no_proxy", "NO_PROXY")
    return {**{k: v for k, v in stage_env.items() if k not in drop}, "GPT4_MODEL": GPT4_MODEL, **extra}


def bare_command(drafts: Path, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "teacher.py", "--config", str(CONFIG), "--input", str(drafts), "--output", str(output),
            *extra]


@pytest.fixture
def proxy():
    """A loopback HTTP proxy that records the first line of every connection and refuses it (403)."""
    seen: list[str] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            seen.append(self.rfile.readline().decode(errors="replace").strip())
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_seed_env_alone_asks_openai_and_without_its_key_stops_before_any_connection(stage_env, drafts, tmp_path,
                                                                                         proxy):
    url, seen = proxy
    output = tmp_path / "teacher_outputs.jsonl"
    env = env_only(stage_env, HTTPS_PROXY=url, HTTP_PROXY=url)  # a request to the API would pass through it
    result = subprocess.run(bare_command(drafts, output), cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert error_line(result) == ("error: distill.teacher_generation.api_key_env: $OPENAI_API_KEY is not set: the "
                                  "teacher at https://api.openai.com/v1 needs a key (export it; nothing was sent)")
    assert f"teacher {GPT4_MODEL}: distill.teacher_model '{GPT4_MODEL}' is no checkpoint" in result.stderr
    assert seen == [] and not output.exists()
    # the same with a key: the stage does go to OpenAI's API (through the proxy, which refuses it)
    result = subprocess.run(bare_command(drafts, output, "--set", "distill.teacher_generation.max_retries=0"),
                            cwd=REPO, env={**env, "OPENAI_API_KEY": "sk-not-a-key"}, capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode != 0 and "sk-not-a-key" not in result.stderr
    # a connection the client opens and drops unused sends no line (seen now and then): not a request
    requests = [line for line in seen if line]
    assert requests and all(line.startswith("CONNECT api.openai.com:443 ") for line in requests), seen


def test_openai_base_url_points_the_seed_env_teacher_at_a_server_with_chat_completions(stage_env, drafts, tmp_path):
    output = tmp_path / "teacher_outputs.jsonl"
    with fake_servers() as start:
        server = start(lambda n, path, body, headers: teacher_reply(body))
        result = subprocess.run(bare_command(drafts, output), cwd=REPO, capture_output=True, text=True,
                                timeout=TIMEOUT, env=env_only(stage_env, OPENAI_BASE_URL=server.url))
        assert result.returncode == 0, result.stderr[-3000:]  # loopback: no key needed (teacher_requires_key auto)
        assert len(server.calls) == N
        for path, headers, body in server.calls:
            assert path == "/v1/chat/completions" and body["model"] == GPT4_MODEL
            assert body["messages"][-1]["role"] == "user" and "Student draft:" in body["messages"][-1]["content"]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(N)] and {r["teacher"] for r in rows} == {GPT4_MODEL}
    record = json.loads(output.with_name("teacher_outputs.config.json").read_text())
    gen = record["config"]["distill"]["teacher_generation"]  # the decided backend is what the record says
    assert (gen["backend"], gen["api"], gen["base_url"]) == ("openai", "chat", server.url)


def test_a_reply_the_student_cannot_fit_stops_the_stage_until_max_new_tokens_holds_it(stage_env, drafts, tmp_path,
                                                                                      tokenizer):
    from selftrain.checks import student_tokens
    from selftrain.config import load_config
    from selftrain.distill import reasoning_target

    def agreeing(body: dict) -> tuple[int, dict, str]:
        i = int(which(body)[1:])
        steps = "".join(f"{k}. Step {k} of the check.\n" for k in range(1, (12 if i == 5 else 2) + 1))
        text = VERDICT.replace("1. Look.\n", steps).format("YES" if i % 2 == 0 else "NO")  # the truth
        return 200, {}, json.dumps({"id": "c", "object": "chat.completion", "model": body["model"],
                                    "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant", "content": text}}]})

    output = tmp_path / "teacher_outputs.jsonl"
    with fake_servers() as start:
        server = start(lambda n, path, body, headers: agreeing(body))
        result = run_stage(drafts, output, server.url, stage_env, "--set", "max_new_tokens=60")
        rows = [json.loads(line) for line in lines(output)]
        assert [r["id"] for r in rows] == [f"q{i}" for i in range(N)]  # every reply is kept on disk
        config = load_config(CONFIG)
        targets = [reasoning_target(r["response"], config.distill.draft_analysis)[0] for r in rows]
        assert all(t is not None and t.startswith("## Step-by-Step Reasoning") for t in targets)
        counts = [student_tokens(config, tokenizer, t) for t in targets]
        assert max(counts) == counts[5] > 60 >= max(counts[:5] + counts[6:])  # only q5's target is too long
        assert error_line(result) == (
            f"error: {output}:6: max_new_tokens: 60 is below the {counts[5]} tokens of the target made from this "
            f"line, as the student's tokenizer counts them with its end-of-turn token (1 of {N} targets are longer, "
            f"the longest {counts[5]}): evaluation would cut them off before their final assessment; "
            f"set max_new_tokens >= {counts[5]}")
        assert not output.with_name("teacher_outputs.config.json").exists()
        before = len(server.calls)
        result = run_stage(drafts, output, server.url, stage_env, "--set", f"max_new_tokens={counts[5]}")
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(server.calls) == before  # nothing asked twice
    metrics = json.loads(output.with_name("teacher_outputs.config.json").read_text())["metrics"]
    assert metrics["longest_target_student_tokens"] == counts[5] and metrics["replies"] == N
