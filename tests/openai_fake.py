"""A fake OpenAI-compatible server on 127.0.0.1, run in a thread of the test process.

Shared by the backend tests (tests/test_backend_openai_faults.py) and the stage tests
(tests/test_stage_openai_faults.py): it speaks the completions and chat-completions
JSON, records every request it receives and lets a test choose each reply, so a
test can count and inspect what a backend or a stage subprocess asked for.
"""
from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def prompt_of(body: dict) -> str:
    return body["prompt"] if "prompt" in body else body["messages"][-1]["content"]


def answer(path: str, body: dict, honour_n: bool = True) -> dict:
    """A well-formed reply: choice i says which prompt, seed and index produced it."""
    n = body.get("n", 1) if honour_n else 1
    choices = []
    for i in range(n):
        text = f"{prompt_of(body)}|seed={body.get('seed')}|i={i}"
        finish = "stop" if i % 2 == 0 else "length"
        if path.endswith("/chat/completions"):
            choices.append({"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish})
        else:
            choices.append({"index": i, "text": text, "finish_reason": finish, "logprobs": None})
    return {"id": "cmpl-1", "object": "text_completion", "model": body["model"], "choices": choices,
            "usage": {"prompt_tokens": 3, "completion_tokens": 5 * n, "total_tokens": 3 + 5 * n}}


class FakeOpenAI:
    """Call n (from 0) is answered by `reply(n, path, body, headers)`: (status, headers, text), or None for
    the well-formed `answer`. `calls` holds (path, headers with lower-case names, body) per request;
    `peak` is the most requests in flight at once."""

    def __init__(self, reply=None, honour_n: bool = True):
        self.calls: list[tuple[str, dict, dict]] = []
        self.in_flight = self.peak = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    n = len(server.calls)
                    server.calls.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    server.in_flight += 1
                    server.peak = max(server.peak, server.in_flight)
                try:
                    result = reply(n, self.path, body, server.calls[n][1]) if reply else None
                    if result is None:
                        result = (200, {}, json.dumps(answer(self.path, body, honour_n)))
                    status, headers, text = result
                    data = text.encode()
                    self.send_response(status)
                    for key, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                                       **headers}.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with lock:
                        server.in_flight -= 1

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # a client that gave up (stalls, kills)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def bodies(self) -> list[dict]:
        return [body for _, _, body in self.calls]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def fake_servers():
    """`start(reply=None, honour_n=True)` starts a FakeOpenAI; all are closed on leaving."""
    servers = []

    def start(reply=None, honour_n=True) -> FakeOpenAI:
        servers.append(FakeOpenAI(reply, honour_n))
        return servers[-1]

    try:
        yield start
    finally:
        for server in servers:
            server.close()
