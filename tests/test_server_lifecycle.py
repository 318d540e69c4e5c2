"""The server a stage launches (`generation.server`): gguf_for, start, readiness, a real request,
and that the server always stops, with the real llama.cpp server (llama-cpp-python) on the
embedded model's GGUF file. Tests that start it are `slow`; each start takes a few seconds."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from selftrain.config import GenerationConfig
from selftrain.errors import InputError
from selftrain.generation.base import Request, SamplingParams
from selftrain.generation import server as server_mod
from selftrain.generation.server import LaunchedServer, LaunchedServerBackend, gguf_for

REPO = Path(__file__).resolve().parents[1]
PROMPT = "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"


def llama_gen(**kw) -> GenerationConfig:
    return GenerationConfig(backend="openai", server="llama_cpp", **kw)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_gone(pid: int, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def models(base_url: str) -> list[str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{base_url}/models", timeout=10) as reply:
        return [m["id"] for m in json.loads(reply.read())["data"]]


# --- gguf_for ---

def test_gguf_for_the_embedded_model_is_its_packaged_file():
    from selftrain.models import _gguf_location

    directory, filename = _gguf_location("smollm2-135m")
    path = gguf_for("smollm2-135m")
    assert path == directory / filename and path.is_file() and path.suffix == ".gguf"


def test_gguf_for_a_file_or_a_directory_holding_exactly_one(tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    (one / "m.Q4_0.gguf").write_bytes(b"x")
    (one / "config.json").write_text("{}")
    assert gguf_for(str(one)) == (one / "m.Q4_0.gguf").absolute()
    assert gguf_for(str(one / "m.Q4_0.gguf")) == (one / "m.Q4_0.gguf").absolute()
    (one / "other.gguf").write_bytes(b"y")
    with pytest.raises(InputError, match="2 GGUF files"):
        gguf_for(str(one))
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    with pytest.raises(InputError, match=r"no GGUF for .*ckpt: llama.cpp runs GGUF files, and this directory holds "
                                         r"neither a .gguf nor a Hugging Face checkpoint"):
        gguf_for(str(checkpoint))
    (checkpoint / "config.json").write_text("{}")  # a checkpoint is exported (tests/test_gguf_export.py) ...
    with pytest.raises(InputError, match=r"checkpoint .*ckpt: architecture none named .*convert_hf_to_gguf.py"):
        gguf_for(str(checkpoint))  # ... when its architecture is one the export handles
    with pytest.raises(InputError, match="not a .gguf file"):
        gguf_for(str(checkpoint / "config.json"))
    with pytest.raises(InputError, match="no such file or directory"):
        gguf_for(str(tmp_path / "missing"))


# --- startup failures (no real model needed) ---

def test_startup_timeout_stops_the_silent_server_quickly():
    gen = llama_gen(server_startup_timeout=2)
    server = LaunchedServer(gen, "fake", command=[sys.executable, "-c", "import time; time.sleep(60)"])
    started = time.monotonic()
    with pytest.raises(InputError, match="did not answer GET http://127.0.0.1:[0-9]+/v1/models within "
                                         "generation.server_startup_timeout=2 s"):
        server.start()
    assert time.monotonic() - started < 10
    assert server.pid and not alive(server.pid)
    assert server.log_path.is_file()  # kept after a failure, named in the message
    server.log_path.unlink()


def test_vllm_without_its_environment_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(server_mod, "DEFAULT_VLLM_PYTHON", tmp_path / "no-venv" / "bin" / "python")
    with pytest.raises(InputError, match=r"make setup-vllm.*generation.server_python"):
        LaunchedServer(GenerationConfig(backend="openai", server="vllm"), "smollm2-135m").start()
    with pytest.raises(InputError, match="generation.server_python: .* is not an executable file"):
        LaunchedServer(GenerationConfig(backend="openai", server="vllm",
                                        server_python=str(tmp_path / "nope")), "smollm2-135m").start()


def test_vllm_gpu_build_without_a_gpu_stops_before_launching(tmp_path):
    fake = tmp_path / "python"  # answers the platform probe as a GPU build that found no GPU
    fake.write_text('#!/bin/sh\necho \'{"dists": {"vllm": "0.33.0"}, "device": "", '
                    '"platform": "UnspecifiedPlatform"}\'\n')
    fake.chmod(0o755)
    gen = GenerationConfig(backend="openai", server="vllm", server_python=str(fake))
    server = LaunchedServer(gen, "smollm2-135m")
    with pytest.raises(InputError, match=r"vllm 0.33.0 .* is a GPU build, and it finds no GPU here"):
        server.start()
    assert server.pid is None  # nothing was launched


# --- the real llama.cpp server ---

@pytest.mark.slow
def test_start_answer_and_stop_on_normal_exit():
    sigterm_before = signal.getsignal(signal.SIGTERM)
    gen = llama_gen(max_concurrency=2)
    with LaunchedServerBackend(gen, "smollm2-135m", progress=False) as backend:
        server = backend.server
        pid, port = server.pid, server.port
        assert server.base_url == f"http://127.0.0.1:{port}/v1"
        assert server.served_model == "smollm2-135m" and models(server.base_url) == ["smollm2-135m"]
        assert alive(pid) and os.getpgid(pid) == pid != os.getpgid(0)  # its own process group
        assert signal.getsignal(signal.SIGTERM) is server_mod._on_sigterm
        params = SamplingParams(temperature=0.8, top_p=1.0, top_k=0, max_new_tokens=24)
        requests = [Request(f"q{i}", PROMPT, None, params, seed=i) for i in range(3)]
        completions = {c.key: c for c in backend.generate(requests)}
        assert sorted(completions) == ["q0", "q1", "q2"]
        for c in completions.values():
            assert c.text.strip() and c.finish_reason in ("stop", "length") and 0 < c.num_tokens <= 24
        assert backend.stats.completions == 3 and backend.stats.completion_tokens > 0
        described = backend.describe()
        assert described["server"] == "llama_cpp" and described["server_model"] == str(gguf_for("smollm2-135m"))
        assert described["backend"] == "openai" and described["server_ignores_n"] is True
        log_path = server.log_path
    assert not alive(pid) and not listening(port)
    assert not log_path.exists()  # a clean stop removes the temporary log
    assert signal.getsignal(signal.SIGTERM) == sigterm_before


@pytest.mark.slow
def test_stop_on_an_exception_inside_the_with_block(tmp_path):
    log = tmp_path / "server.log"
    with pytest.raises(RuntimeError, match="boom"):
        with LaunchedServer(llama_gen(), "smollm2-135m", log_path=log) as server:
            pid, port = server.pid, server.port
            assert listening(port)
            raise RuntimeError("boom")
    assert not alive(pid) and not listening(port)
    assert "llama_cpp.server" in log.read_text()  # a given log stays, starting with the command


STAGE = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from selftrain.config import GenerationConfig
    from selftrain.generation.server import LaunchedServer
    with LaunchedServer(GenerationConfig(backend="openai", server="llama_cpp"), "smollm2-135m") as server:
        with open(sys.argv[1] + ".tmp", "w") as fh:
            fh.write(f"{{server.pid}} {{server.port}}")
        import os; os.replace(sys.argv[1] + ".tmp", sys.argv[1])
        time.sleep(120)
""").format(repo=str(REPO))


def kill_group(pid: int) -> None:
    """After a failed check: leave no server behind for the tests that follow."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def start_stage(tmp_path) -> tuple[subprocess.Popen, int, int]:
    """A stand-in stage process that launched the server and waits; returns it, the server's pid and port."""
    pid_file = tmp_path / "server.pid"
    # A shell starts background jobs with SIGINT ignored, and Python keeps an inherited SIG_IGN: give the
    # stand-in stage the default Ctrl-C behaviour, as a stage run from a terminal has, however pytest was started.
    stage = subprocess.Popen([sys.executable, "-c", STAGE, str(pid_file)], stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not pid_file.exists():
        if stage.poll() is not None or time.monotonic() > deadline:
            stage.kill()
            pytest.fail(f"the stage did not start its server: {stage.communicate()[1][-2000:]}")
        time.sleep(0.1)
    pid, port = map(int, pid_file.read_text().split())
    assert alive(pid) and listening(port)
    return stage, pid, port


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_the_stage_stops_its_server_when_signalled(tmp_path, sig, code):
    stage, pid, port = start_stage(tmp_path)
    stage.send_signal(sig)  # Ctrl-C reaches the stage only: the server is in its own process group
    try:
        stage.wait(timeout=30)
    finally:
        if stage.poll() is None:
            stage.kill()
    stderr = stage.stderr.read()
    gone = wait_gone(pid, 2)
    kill_group(pid)
    assert gone, "the server outlived its stage"
    assert not listening(port)
    if sig == signal.SIGTERM:
        assert stage.returncode == code, stderr[-2000:]
    else:  # an uncaught KeyboardInterrupt: traceback and exit 1 here; stages exit 130 through cli.run
        assert "KeyboardInterrupt" in stderr and stage.returncode != 0


@pytest.mark.slow
def test_a_killed_stage_takes_its_server_down(tmp_path):
    stage, pid, port = start_stage(tmp_path)
    stage.kill()  # SIGKILL: no handler runs; the kernel's parent-death signal stops the server
    stage.wait(timeout=10)
    gone = wait_gone(pid, 15)
    kill_group(pid)
    assert gone, "the server outlived a SIGKILLed stage"
    assert not listening(port)


@pytest.mark.slow
def test_a_server_that_crashes_at_start_is_reported_at_once_with_its_log(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF but not really" * 10)
    server = LaunchedServer(llama_gen(server_startup_timeout=120), str(bad))
    started = time.monotonic()
    with pytest.raises(InputError) as caught:
        server.start()
    assert time.monotonic() - started < 30  # not the 120 s timeout
    message = str(caught.value)
    assert "generation.server: llama_cpp exited with code" in message and "before it answered" in message
    assert "  | " in message and str(server.log_path) in message  # the log's last lines, and where it is
    assert not alive(server.pid)

    args = LaunchedServer(llama_gen(server_args=["--n_ctx", "lots"]), "smollm2-135m")
    with pytest.raises(InputError, match=r"(?s)exited with code [0-9]+ .*invalid int value: 'lots'"):
        args.start()
    assert not alive(args.pid)
