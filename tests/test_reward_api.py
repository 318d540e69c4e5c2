"""The api reward against a real HTTP server on 127.0.0.1 (a thread in the test).

Batching and order, retries on 500 / 429 / a stalled reply / a refused
connection, the error after the last retry, replies that are not one finite
number per item (errors, not retried), and the key: sent as a Bearer header,
never in a file, a log line or an error message, through the real judge stage.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from selftrain.config import Config, RewardConfig
from selftrain.errors import InputError
from selftrain.rewards import get_reward
from selftrain.rewards.api import ApiReward
from selftrain.runs import StageOutput
from selftrain.stages.judge import judge_file

SECRET = "sk-test-SECRET123"


def by_length(n, items, headers):
    """The well-behaved service: score = len(response)."""
    return 200, {}, json.dumps({"scores": [len(item["response"]) for item in items]})


def failing_first(count, status=500, headers=None):
    """Answer the first `count` requests with `status`, then score by length."""
    def reply(n, items, request_headers):
        return (status, headers or {}, "try again") if n < count else by_length(n, items, request_headers)
    return reply


class ScoringServer:
    """A scoring service; request n (from 0) is answered by `reply(n, items, headers)` -> (status, headers, body)."""

    def __init__(self, reply=by_length):
        self.requests = []  # (headers, items) per request received
        self.scored = []  # items of the requests answered with 200
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                items = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["items"]
                with lock:
                    n = len(server.requests)
                    server.requests.append((dict(self.headers), items))
                status, headers, body = reply(n, items, dict(self.headers))
                if status == 200:
                    server.scored.extend(items)
                data = body.encode()
                self.send_response(status)
                for key, value in {"Content-Length": str(len(data)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.handle_error = lambda request, address: None  # a client that gave up (the stall test)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/score"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve(monkeypatch):
    """Start scoring servers; quick retries; no proxy or key from the environment."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                "SELFTRAIN_REWARD_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(ApiReward, "backoff_base", 0.01)
    servers = []

    def start(reply=by_length) -> ScoringServer:
        servers.append(ScoringServer(reply))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def api_config(url: str, **reward) -> Config:
    config = Config()
    config.reward_config = RewardConfig(type="api", api_endpoint=url, **reward)
    return config.validate()


def samples(n: int) -> list[dict]:
    """Judge-stage records; response i has length i + 1, so its score names it."""
    return [{"id": f"s{i}", "prompt_id": f"p{i // 4}", "prompt": f"question {i}", "response": "x" * (i + 1),
             "metadata": {}} for i in range(n)]


def test_scores_every_record_in_order_in_batches(serve):
    server = serve()
    results = get_reward(api_config(server.url, api_batch_size=10)).score(samples(23))
    assert [r["reward_score"] for r in results] == [float(i + 1) for i in range(23)]
    assert all(r["is_correct"] is None and r["answer_found"] is True for r in results)
    assert [len(items) for _, items in server.requests] == [10, 10, 3]
    assert server.requests[2][1][0] == {"prompt": "question 20", "response": "x" * 21}
    assert get_reward(api_config(server.url)).verifiable is False


def test_prompt_is_the_prompt_field_else_last_user_message_else_prompt_text(serve):
    server = serve()
    records = [
        {"id": "a", "prompt": "plain question", "prompt_text": "<rendered>", "response": "r"},
        {"id": "b", "messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "first"},
                                 {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second"}],
         "prompt_text": "<rendered>", "response": "r"},
        {"id": "c", "prompt_text": "<rendered only>", "response": "r"},
    ]
    get_reward(api_config(server.url)).score(records)
    assert [item["prompt"] for item in server.requests[0][1]] == ["plain question", "second", "<rendered only>"]
    with pytest.raises(InputError, match="record d: prompt: missing"):
        get_reward(api_config(server.url)).score([{"id": "d", "response": "r"}])


def test_server_errors_are_retried_without_losing_or_repeating_items(serve):
    server = serve(failing_first(2, status=500))
    results = get_reward(api_config(server.url, api_batch_size=10)).score(samples(23))
    assert [r["reward_score"] for r in results] == [float(i + 1) for i in range(23)]
    assert len(server.requests) == 5  # the first batch three times, then one request per batch
    assert sorted(len(item["response"]) for item in server.scored) == list(range(1, 24))


def test_429_waits_for_retry_after_not_the_backoff(serve, monkeypatch):
    monkeypatch.setattr(ApiReward, "backoff_base", 5.0)  # a test that took the backoff would take 5 s
    server = serve(failing_first(1, status=429, headers={"Retry-After": "0"}))
    started = time.monotonic()
    results = get_reward(api_config(server.url)).score(samples(3))
    assert time.monotonic() - started < 2.0
    assert [r["reward_score"] for r in results] == [1.0, 2.0, 3.0]
    assert len(server.requests) == 2


def test_a_stalled_reply_times_out_and_is_retried(serve):
    def stall_first(n, items, headers):
        if n == 0:
            time.sleep(2.0)
        return by_length(n, items, headers)

    server = serve(stall_first)
    started = time.monotonic()
    results = get_reward(api_config(server.url, api_timeout=0.3)).score(samples(4))
    assert time.monotonic() - started < 1.5  # gave up on the stalled request instead of waiting 2 s
    assert [r["reward_score"] for r in results] == [1.0, 2.0, 3.0, 4.0]
    assert len(server.requests) == 2


def test_a_service_that_keeps_failing_stops_the_stage_after_the_last_retry(serve):
    server = serve(failing_first(1000, status=503))
    with pytest.raises(InputError) as error:
        get_reward(api_config(server.url, api_max_retries=2, api_batch_size=10)).score(samples(12))
    message = str(error.value)
    assert server.url in message and "s0..s9" in message and "3 attempts" in message and "HTTP 503" in message
    assert len(server.requests) == 3  # never went on to the second batch


def test_a_refused_connection_is_retried_then_reported(serve):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(InputError, match="2 attempts; last: cannot connect"):
        get_reward(api_config(f"http://127.0.0.1:{port}/score", api_max_retries=1)).score(samples(1))


@pytest.mark.parametrize("body, expected", [
    ('{"scores": [1, 2]}', "2 scores for 3 items"),
    ('{"scores": [1, "2", 3]}', 'scores[1]: expected a number, got "2"'),
    ('{"scores": [1, null, 3]}', "scores[1]: expected a number, got null"),
    ('{"scores": [1, true, 3]}', "scores[1]: expected a number, got true"),
    ('{"scores": [1, 2, NaN]}', "scores[2]: expected a finite number"),
    ('{"scores": [Infinity, 2, 3]}', "scores[0]: expected a finite number"),
    ("<html>Bad Gateway</html>", "not JSON"),
    ('{"result": [1, 2, 3]}', 'expected {"scores": [...]}'),
    ('{"scores": 3}', "scores: expected a list"),
])
def test_a_reply_that_is_not_one_number_per_item_is_an_error_not_retried(serve, body, expected):
    server = serve(lambda n, items, headers: (200, {}, body))
    with pytest.raises(InputError) as error:
        get_reward(api_config(server.url)).score(samples(3))
    assert expected in str(error.value) and "bad reply" in str(error.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize("status, headers, key, expected", [
    (401, {}, SECRET, "HTTP 401: try again (check the key in reward_config.api_key)"),
    (401, {}, "", "no key was sent"),
    (404, {}, "", "HTTP 404: try again (check reward_config.api_endpoint"),
    (307, {"Location": "http://elsewhere.example/score"}, SECRET, "redirects to http://elsewhere.example/score"),
])
def test_other_client_errors_stop_at_once(serve, status, headers, key, expected):
    server = serve(failing_first(1000, status=status, headers=headers))
    with pytest.raises(InputError) as error:
        get_reward(api_config(server.url, api_key=key)).score(samples(2))
    assert expected in str(error.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize("endpoint", ["", "ftp://host/score", "localhost:8000/score", "http:///score"])
def test_the_endpoint_is_checked_before_any_request(endpoint):
    with pytest.raises(InputError, match=r"reward_config\.api_endpoint"):
        get_reward(api_config(endpoint))


def test_the_key_is_sent_as_a_bearer_header_from_config_or_environment(serve, monkeypatch, capfd):
    server = serve()
    get_reward(api_config(server.url, api_key=SECRET)).score(samples(1))
    monkeypatch.setenv("MY_SCORER_KEY", SECRET + "-env")
    get_reward(api_config(server.url, api_key_env="MY_SCORER_KEY")).score(samples(1))
    capfd.readouterr()
    get_reward(api_config(server.url, api_key_env="UNSET_SCORER_KEY", api_batch_size=1)).score(samples(2))
    sent = [headers.get("Authorization") for headers, _ in server.requests]
    assert sent == [f"Bearer {SECRET}", f"Bearer {SECRET}-env", None, None]
    assert capfd.readouterr().err.count("no API key") == 1  # said once, not per request


def test_the_key_is_never_written_printed_or_put_in_an_error(serve, tmp_path, capfd):
    server = serve(failing_first(1, status=500))
    source = tmp_path / "samples.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in samples(5)))
    config = api_config(server.url, api_key=SECRET, api_batch_size=2)
    output = StageOutput(tmp_path / "judged.jsonl", None)
    metrics = judge_file(config, source, output.path)
    output.finish(config, metrics)

    judged = [json.loads(line) for line in output.path.read_text().splitlines()]
    assert [r["reward_score"] for r in judged] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert json.loads(output.sidecar.read_text())["config"]["reward_config"]["api_key"] == "<redacted>"
    assert server.requests[0][0]["Authorization"] == f"Bearer {SECRET}"

    # A service that echoes what it was sent (once more where the message is cut short),
    # in a retried failure and in a final one.
    def echo(status):
        return lambda n, items, headers: (status, {}, f"denied: {headers['Authorization']} {'.' * 40} "
                                                       f"{headers['Authorization']}")

    for status, retries in ((503, 1), (400, 3)):
        failing = serve(echo(status))
        with pytest.raises(InputError) as error:
            judge_file(api_config(failing.url, api_key=SECRET, api_max_retries=retries),
                       source, tmp_path / f"failed_{status}.jsonl")
        assert "denied: Bearer <redacted>" in str(error.value) and "sk-test" not in str(error.value)

    captured = capfd.readouterr()
    assert "<redacted>" in captured.err  # the retry log line quoted the echo, scrubbed
    assert "sk-test" not in captured.out + captured.err
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 3
    assert not [p.name for p in files if SECRET.encode() in p.read_bytes()]
