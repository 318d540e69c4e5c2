"""The openai backend against real HTTP servers on 127.0.0.1 (a thread in the test).

The fake server speaks the OpenAI completions and chat-completions JSON. Covered:
`n` honoured (one call for N samples, choices in order) and dropped (the seeded
fallback); retries by the openai client on 500, 429 + Retry-After and a stalled
reply, then the error after the last one; replies outside the protocol (errors
naming the key, never retried); 401 at once, and the key in no message or log
line even when the server echoes it; explicit sampling in every request body;
the concurrency bound; a consumer that stops; and a driver killed with SIGKILL
midway that resumes without losing, duplicating or re-asking anything.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from selftrain.config import GenerationConfig
from selftrain.generation import BackendError, CallUsage, Request, SamplingParams, request_seed
from selftrain.generation.openai_compat import OpenAIBackend

from openai_fake import FakeOpenAI, fake_servers, prompt_of  # tests/ is on sys.path (pytest prepends a test file's folder)

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-test-SECRET"
KEY_ENV = "SELFTRAIN_TEST_OPENAI_KEY"
MODEL = "test-model"
PARAMS = SamplingParams(temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=16)


@pytest.fixture
def serve(monkeypatch):
    """Start fake servers; quick client backoff; no proxy or key from the environment."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                "OPENAI_API_KEY", KEY_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("openai._base_client.INITIAL_RETRY_DELAY", 0.01)
    with fake_servers() as start:
        yield start


def backend(url: str, **gen) -> OpenAIBackend:
    gen.setdefault("api_key_env", KEY_ENV)
    return OpenAIBackend(GenerationConfig(backend="openai", base_url=url, **gen), MODEL, progress=False)


def requests_for(prompts: int, samples: int, params: SamplingParams = PARAMS, chat: bool = False,
                 interleave: bool = False) -> list[Request]:
    """Keys p<i>-s<j>; prompt i is "prompt <i>". Interleaved: all first samples, then all second, ..."""
    order = ([(i, j) for j in range(samples) for i in range(prompts)] if interleave else
             [(i, j) for i in range(prompts) for j in range(samples)])
    out = []
    for i, j in order:
        key, text = f"p{i}-s{j}", f"prompt {i}"
        out.append(Request(key, None if chat else text, ({"role": "user", "content": text},) if chat else None,
                           params, request_seed(0, key)))
    return out


def run(b: OpenAIBackend, requests: list[Request]) -> dict:
    with b:
        return {c.key: c for c in b.generate(requests)}


def seed31(key: str) -> int:
    return request_seed(0, key) & 0x7FFF_FFFF


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_n_is_honoured_one_call_per_prompt_choices_in_order(serve, api):
    server = serve()
    b = backend(server.url, api=api)
    got = run(b, requests_for(2, 4, chat=api == "chat", interleave=True))
    assert len(server.calls) == 2 and [body["n"] for body in server.bodies()] == [4, 4]
    assert all(path == f"/v1/{'chat/' if api == 'chat' else ''}completions" for path, _, _ in server.calls)
    for i in range(2):
        for j in range(4):
            c = got[f"p{i}-s{j}"]
            assert c.text == f"prompt {i}|seed={seed31(f'p{i}-s0')}|i={j}"  # the group's seed, choice j
            assert c.finish_reason == ("stop" if j % 2 == 0 else "length") and c.num_tokens is None
            assert c.call_usage == CallUsage(samples=4, prompt_tokens=3, completion_tokens=20)  # the call's, whole
    assert (b.stats.requests, b.stats.completions, b.stats.prompt_tokens, b.stats.completion_tokens) == (2, 8, 6, 40)
    assert b.describe() == {"backend": "openai", "base_url": server.url, "model": MODEL, "api": api,
                            "server_ignores_n": False}
    if api == "chat":
        assert sorted(body["messages"][0]["content"] for body in server.bodies()) == ["prompt 0", "prompt 1"]
        assert all(body["messages"] == [{"role": "user", "content": prompt_of(body)}] for body in server.bodies())


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_server_that_drops_n_gets_one_seeded_request_per_sample(serve, capfd, concurrency):
    server = serve(honour_n=False)
    requests = requests_for(3, 4)
    b = backend(server.url, max_concurrency=concurrency)
    got = run(b, requests)
    assert sorted(got) == sorted(r.key for r in requests)  # each key exactly once (dict + count below)
    assert b.stats.completions == 12 and len(server.calls) == 12 == b.stats.requests
    # One request per sample, each with that sample's own seed (the group call carries its first sample's).
    assert sorted(body["seed"] for body in server.bodies()) == sorted(seed31(r.key) for r in requests)
    for r in requests:
        assert got[r.key].text == f"{r.prompt_text}|seed={seed31(r.key)}|i=0" and got[r.key].num_tokens == 5
        assert got[r.key].call_usage is None  # one choice per call: its own count
    # Only calls sent before the server was found out asked for n; with one in flight, just the first.
    with_n = [body for body in server.bodies() if "n" in body]
    assert len(with_n) == (1 if concurrency == 1 else 3) and all(body["n"] == 4 for body in with_n)
    assert b.describe()["server_ignores_n"] is True
    assert capfd.readouterr().err.count("ignores `n`") == 1


def test_use_n_never_sends_one_request_per_sample(serve):
    server = serve()
    got = run(backend(server.url, use_n="never"), requests_for(1, 4))
    assert len(server.calls) == 4 and not [body for body in server.bodies() if "n" in body]
    assert sorted(body["seed"] for body in server.bodies()) == sorted(seed31(f"p0-s{j}") for j in range(4))
    assert all(c.num_tokens == 5 for c in got.values())


def test_every_request_states_its_sampling(serve):
    server = serve()
    params = [SamplingParams(0.0, 1.0, 0, 7), SamplingParams(0.7, 0.9, 40, 32), SamplingParams(1.3, 0.5, 1, 1)]
    requests = [Request(f"k{i}", f"prompt {i}", None, p, request_seed(5, f"k{i}") | (1 << 62))
                for i, p in enumerate(params)]
    run(backend(server.url), requests)
    bodies = sorted(server.bodies(), key=lambda body: body["prompt"])
    assert len(bodies) == len(requests) == 3  # one request each: zip below pairs them all
    for body, r in zip(bodies, requests):
        assert body["model"] == MODEL and body["prompt"] == r.prompt_text
        assert (body["temperature"], body["top_p"], body["max_tokens"]) == (
            r.params.temperature, r.params.top_p, r.params.max_new_tokens)
        assert isinstance(body["seed"], int) and 0 <= body["seed"] < 2 ** 31 and body["seed"] == r.seed & 0x7FFF_FFFF
        assert body.get("top_k") == (r.params.top_k or None)  # only when > 0 (vLLM / llama.cpp extension)
        assert "max_completion_tokens" not in body


def test_server_errors_are_retried_by_the_client(serve, capfd):
    server = serve(lambda n, path, body, headers: (500, {}, '{"error": {"message": "busy"}}') if n < 2 else None)
    b = backend(server.url, max_retries=3)
    got = run(b, requests_for(1, 1))
    assert got["p0-s0"].text.startswith("prompt 0|") and len(server.calls) == 3
    assert b.stats.requests == 1 and b.stats.completions == 1
    assert server.calls[0][2] == server.calls[2][2]  # the same request again
    err = capfd.readouterr().err
    assert "request p0-s0: HTTP 500; retry 1/3" in err and "retry 2/3" in err


def test_429_waits_for_retry_after_not_the_backoff(serve, monkeypatch):
    monkeypatch.setattr("openai._base_client.INITIAL_RETRY_DELAY", 5.0)  # the backoff would take >= 3.75 s
    server = serve(lambda n, path, body, headers: (429, {"Retry-After": "0.05"}, "slow down") if n == 0 else None)
    started = time.monotonic()
    got = run(backend(server.url), requests_for(1, 1))
    assert time.monotonic() - started < 2.0 and len(server.calls) == 2 and "p0-s0" in got

    # A wait longer than the client's limit (120 s) is not retried, and the error says why.
    server = serve(lambda n, path, body, headers: (429, {"Retry-After": "500"}, "slow down"))
    with pytest.raises(BackendError, match=r"after 1 attempt; last: HTTP 429: slow down \(it asked to wait 500 s"):
        run(backend(server.url, max_retries=3), requests_for(1, 1))
    assert len(server.calls) == 1


def test_a_stalled_reply_is_retried_then_reported_after_the_last_attempt(serve):
    def stall(first_only):
        def reply(n, path, body, headers):
            if n == 0 or not first_only:
                time.sleep(1.0)
            return None
        return reply

    server = serve(stall(first_only=True))
    started = time.monotonic()
    assert "p0-s0" in run(backend(server.url, timeout=0.3), requests_for(1, 1))
    assert time.monotonic() - started < 0.9 and len(server.calls) == 2

    server = serve(stall(first_only=False))
    started = time.monotonic()
    with pytest.raises(BackendError) as error:
        run(backend(server.url, timeout=0.3, max_retries=1), requests_for(1, 1))
    message = str(error.value)
    assert time.monotonic() - started < 1.5 and len(server.calls) == 2
    assert "request p0-s0" in message and "failed after 2 attempts" in message
    assert "generation.timeout=0.3 s" in message and "generation.max_retries" in message and "\n" not in message


def test_a_refused_connection_is_retried_then_reported(serve):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BackendError, match=r"request p0-s0: failed after 2 attempts; last: cannot connect"):
        run(backend(f"http://127.0.0.1:{port}/v1", max_retries=1), requests_for(1, 1))


def choice(text="ok", finish="stop", index=0):
    return {"index": index, "text": text, "finish_reason": finish}


@pytest.mark.parametrize("api, samples, text, content_type, expected", [
    ("completions", 1, "<html>Bad Gateway</html>", "text/html", "not JSON: '<html>Bad Gateway</html>'"),
    ("completions", 1, '{"choices": [', "application/json", "not JSON"),
    ("completions", 1, '{"id": "x", "object": "text_completion"}', "application/json", "`choices` list"),
    ("completions", 1, json.dumps({"choices": [choice(finish="content_filter")]}), "application/json",
     'finish_reason: "content_filter" is not one of stop, length'),
    ("completions", 1, json.dumps({"choices": [choice(finish=None)]}), "application/json", "finish_reason: null"),
    ("completions", 1, json.dumps({"choices": [choice(), choice(index=1)]}), "application/json", "2 choices for n=1"),
    ("completions", 4, json.dumps({"choices": [choice(index=i) for i in range(3)]}), "application/json",
     "3 choices for n=4"),
    ("completions", 2, json.dumps({"choices": [choice(), choice()]}), "application/json", "index: 0 appears twice"),
    ("completions", 2, json.dumps({"choices": [choice(), choice(index=2)]}), "application/json",
     "index: 2 is not in 0..1"),
    ("completions", 1, json.dumps({"choices": [choice(text=5)]}), "application/json", "text: expected a string"),
    ("completions", 1, json.dumps({"choices": [choice()], "usage": {"completion_tokens": "5"}}), "application/json",
     "usage: expected integer"),
    ("chat", 1, json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": None},
                                         "finish_reason": "stop"}]}), "application/json",
     "message.content: expected a string, got null"),
])
def test_a_reply_outside_the_protocol_is_an_error_naming_the_key_not_retried(serve, api, samples, text,
                                                                            content_type, expected):
    server = serve(lambda n, path, body, headers: (200, {"Content-Type": content_type}, text))
    with pytest.raises(BackendError) as error:
        run(backend(server.url, api=api), requests_for(1, samples, chat=api == "chat"))
    message = str(error.value)
    assert "request p0-s0" in message and "bad reply" in message and expected in message, message
    assert len(server.calls) == 1


def test_a_reply_without_usage_is_accepted_and_counts_no_tokens(serve, capfd):
    server = serve(lambda n, path, body, headers: (200, {}, json.dumps({"choices": [choice(f"r{n}")]})))
    b = backend(server.url)
    got = run(b, requests_for(3, 1))
    assert {c.text for c in got.values()} == {"r0", "r1", "r2"} and all(c.num_tokens is None for c in got.values())
    assert (b.stats.completions, b.stats.completion_tokens, b.stats.prompt_tokens) == (3, 0, 0)
    assert capfd.readouterr().err.count("no `usage`") == 1


def test_a_call_for_n_samples_without_usage_leaves_every_count_unknown(serve):
    server = serve(lambda n, path, body, headers: (200, {}, json.dumps(
        {"choices": [choice(f"r{i}", index=i) for i in range(body["n"])]})))
    b = backend(server.url)
    got = run(b, requests_for(1, 3))
    assert len(server.calls) == 1 and [c.text for c in sorted(got.values(), key=lambda c: c.key)] == ["r0", "r1", "r2"]
    assert all(c.num_tokens is None and c.call_usage is None for c in got.values())
    assert (b.stats.completions, b.stats.completion_tokens, b.stats.prompt_tokens) == (3, 0, 0)


def test_401_stops_at_once_and_the_key_is_in_no_message_or_log(serve, monkeypatch, capfd):
    monkeypatch.setenv(KEY_ENV, SECRET)

    def echo(status):  # a server that quotes what it was sent (twice, so a cut message cannot hide it)
        return lambda n, path, body, headers: (status, {}, json.dumps(
            {"error": {"message": f"denied: {headers['authorization']} {'.' * 40} {headers['authorization']}",
                       "type": "invalid_request_error"}}))

    server = serve(echo(401))
    b = backend(server.url, max_retries=3)
    with pytest.raises(BackendError) as error:
        run(b, requests_for(1, 1))
    message = str(error.value)
    assert len(server.calls) == 1 and server.calls[0][1]["authorization"] == f"Bearer {SECRET}"
    assert "HTTP 401: denied: Bearer <redacted>" in message and f"check the key in ${KEY_ENV}" in message
    assert "sk-test" not in message and "sk-test" not in json.dumps(b.describe())

    failing = serve(echo(503))
    with pytest.raises(BackendError) as error:
        run(backend(failing.url, max_retries=1), requests_for(1, 1))
    assert "failed after 2 attempts; last: HTTP 503: denied: Bearer <redacted>" in str(error.value)
    assert "sk-test" not in str(error.value) and len(failing.calls) == 2

    captured = capfd.readouterr()
    assert "retry 1/1" in captured.err and "sk-test" not in captured.out + captured.err


def test_without_a_key_a_placeholder_is_sent_and_said_once(serve, capfd):
    server = serve()
    run(backend(server.url, use_n="never"), requests_for(1, 3))
    assert {headers["authorization"] for _, headers, _ in server.calls} == {"Bearer sk-no-key"}
    assert capfd.readouterr().err.count(f"no API key (${KEY_ENV} is not set)") == 1


@pytest.mark.parametrize("api, request_", [
    ("completions", Request("k0", None, ({"role": "user", "content": "hi"},))),
    ("chat", Request("k0", "a rendered prompt")),
])
def test_a_request_without_what_its_api_needs_is_an_error_before_any_call(serve, api, request_):
    server = serve()
    with pytest.raises(BackendError, match="request k0: no (prompt_text|chat messages)"):
        run(backend(server.url, api=api), [request_])
    assert server.calls == []


def test_max_concurrency_bounds_the_requests_in_flight(serve):
    server = serve(lambda n, path, body, headers: time.sleep(0.25))
    got = run(backend(server.url, use_n="never", max_concurrency=3), requests_for(1, 9))
    assert len(got) == 9 and len(server.calls) == 9 and server.peak == 3


def test_a_consumer_that_stops_leaves_no_retries_and_no_threads_behind(serve):
    def reply(n, path, body, headers):
        if n > 0:
            time.sleep(0.6)
            return 500, {}, "busy"
        return None

    server = serve(reply)
    b = backend(server.url, use_n="never", max_concurrency=2, max_retries=5)
    stream = b.generate(requests_for(1, 6))
    first = next(stream)
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 0.2 and first.key in ("p0-s0", "p0-s1")  # whichever arrived first
    time.sleep(0.9)  # the stalled call got its 500: the client would retry now, were it not abandoned
    assert len(server.calls) == 2
    assert not [t for t in threading.enumerate() if t.name.startswith("openai-")]
    b.close()


DRIVER = """
import sys
sys.path.append({repo!r})  # after the standard library (the repo root has scripts named like stdlib modules)
from selftrain.config import GenerationConfig
from selftrain.generation import Request, SamplingParams, request_seed
from selftrain.generation.openai_compat import OpenAIBackend
from selftrain.records import JsonlAppender

url, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
appender = JsonlAppender(path)
keys = [f"k{{i:02d}}" for i in range(count)]
todo = [Request(k, f"prompt for {{k}}", None, SamplingParams(0.7, 1.0, 0, 16), request_seed(0, k))
        for k in keys if k not in appender.done]
gen = GenerationConfig(backend="openai", base_url=url, max_concurrency=2, max_retries=0, timeout=60,
                       api_key_env="{key_env}")
with OpenAIBackend(gen, "test-model", progress=False) as backend:
    for c in backend.generate(todo):
        appender.write({{"id": c.key, "response": c.text, "finish_reason": c.finish_reason}})
appender.close()
"""


def test_a_killed_driver_resumes_without_losing_repeating_or_re_asking(serve, tmp_path):
    """Append each completion as it comes, skip keys on disk: what a stage does (records.JsonlAppender)."""
    total, answered_before_kill = 12, 5
    release, lock, answered = threading.Event(), threading.Lock(), []

    def reply(n, path, body, headers):  # answer 5 requests, then hold every reply until released
        with lock:
            hold = len(answered) >= answered_before_kill
            if not hold:
                answered.append(n)
        if hold:
            release.wait(30)
        return None

    server = serve(reply)
    driver, out = tmp_path / "driver.py", tmp_path / "samples.jsonl"
    driver.write_text(DRIVER.format(repo=str(REPO_ROOT), key_env=KEY_ENV))

    def lines() -> list[str]:
        return out.read_text().splitlines() if out.exists() else []

    with open(tmp_path / "run1.err", "w") as err:
        proc = subprocess.Popen([sys.executable, str(driver), server.url, str(out), str(total)], stderr=err)
        deadline = time.monotonic() + 30
        while len(lines()) < answered_before_kill and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)  # nothing more may arrive: every other reply is held
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    on_disk = {json.loads(line)["id"] for line in lines()}
    assert len(on_disk) == answered_before_kill == len(lines()), (tmp_path / "run1.err").read_text()
    asked_first = [prompt_of(body).removeprefix("prompt for ") for body in server.bodies()]
    assert len(asked_first) == len(set(asked_first)) == answered_before_kill + 2  # two held when killed
    release.set()

    calls_before = len(server.calls)
    result = subprocess.run([sys.executable, str(driver), server.url, str(out), str(total)],
                            stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    asked_again = [prompt_of(body).removeprefix("prompt for ") for _, _, body in server.calls[calls_before:]]
    assert not set(asked_again) & on_disk  # nothing already on disk was asked for again
    assert len(asked_again) == len(set(asked_again)) == total - answered_before_kill
    ids = [json.loads(line)["id"] for line in lines()]
    assert sorted(ids) == [f"k{i:02d}" for i in range(total)]  # none lost, none twice
    records = [json.loads(line) for line in lines()]
    assert all(r["response"].startswith(f"prompt for {r['id']}|") for r in records)
