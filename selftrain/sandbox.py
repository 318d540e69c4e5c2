"""Run untrusted Python source in a throw-away, resource-limited process (Linux only).

The `code` reward runs whatever the model wrote, so a program must not be able
to hang the judge, exhaust the machine, read the parent's secrets, reach the
network or change files, and it must never take the judge down with it:

    sandbox = Sandbox(Limits(timeout=5.0, memory_mb=512, max_output_kb=64))
    result = sandbox.run("print(6 * 7)")   # RunResult(status="ok", stdout="42\\n", ...)

`run` returns a RunResult whose `status` is "ok" (exit 0), "error" (non-zero
exit), "timeout", "output limit", "memory", "cpu time" or "killed": all are the
program's own failures. If the sandbox itself cannot start a program it raises
SandboxError; it never turns its own failure into a failed program.

How: this file is also the launcher. The parent runs `python -I -S sandbox.py
--launch ...` in a new session with an empty environment; the launcher reads the
program from its stdin, sets everything up in that fresh single-threaded
interpreter (no `preexec_fn` in the threaded parent), then execs the base
interpreter on the program (`-I -S -X utf8`, stdin /dev/null, empty environment).
Setup errors come back on a private pipe the program never sees, so a program
cannot fake them and the sandbox cannot fail silently.

Always: wall-clock timeout (SIGKILL to the process group), stdout read as it
comes and the run killed past `max_output_kb`, only a short stderr tail kept,
rlimits RLIMIT_CPU (timeout + 1 s), RLIMIT_AS (memory_mb), RLIMIT_FSIZE
(1 MiB), RLIMIT_NOFILE (32), RLIMIT_CORE (0) and RLIMIT_NPROC. Run as root, the
program runs as user `nobody` (RLIMIT_NPROC never binds uid 0).

Isolation "namespaces" (needs unprivileged user namespaces and Linux >= 5.12;
probed once, used when it works): new user, mount, network, PID and IPC
namespaces. The network namespace has only a down loopback, so no connection
goes anywhere, not even to 127.0.0.1 of the host. The whole filesystem is
read-only (nosuid); /root, /home, the user's home, /run (service sockets such
as docker.sock), /var/tmp and /dev/shm are hidden behind empty tmpfs mounts (the interpreter's own tree is bound back in
when it lives there); the working directory is a private size-limited tmpfs on
/tmp that vanishes with the run. The program is PID 1 of its PID namespace
with a fresh /proc: it sees no other process, RLIMIT_NPROC counts only its own
processes, and when it exits or is killed every process it forked dies too,
even after setsid(). It finally enters a nested user namespace as an
unprivileged uid, so it cannot undo any of the mounts. Still readable:
world-readable files outside the hidden directories (system files, the code
checkout unless it lives in a home).

Isolation "rlimits" (the fallback where user namespaces are not allowed, e.g.
most Docker containers; a warning is logged): the limits above and a fresh
temporary working directory, nothing more. The program can then use the
network, read and write whatever its user may (as root: whatever `nobody` may,
such as /tmp), see other processes, and a child that calls setsid() outlives
the run. RLIMIT_NPROC then counts all processes of the user.

Python only, standard library only (`-I -S`: no site-packages, no user site).
"""
from __future__ import annotations

import os
import sys

PROGRAM_NAME = "solution.py"  # the program's file name inside the sandbox (visible in `ps`)
ISOLATIONS = ("namespaces", "rlimits")
_SETUP_FAILED = 125  # launcher exit code when the sandbox itself could not be set up
_EXEC_MARK = b"exec\n"  # written on the status pipe right before the program is exec'd
_NOBODY = 65534
_SANDBOX_UID = 1000  # the program's uid inside its nested user namespace


# ---------------------------------------------------------------------------
# Launcher side: runs in the fresh `python -I -S sandbox.py --launch ...` process
# ---------------------------------------------------------------------------

_CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
_CLONE_NEWPID, _CLONE_NEWNET = 0x20000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x8, 0x1000, 0x4000, 1 << 18
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID = 0x1, 0x2
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_SYS_MOUNT_SETATTR = 442  # the same number on every architecture that has it
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 1, 4, 38
_SIGKILL = 9
# Hidden behind empty read-only tmpfs mounts (secrets and service sockets live there);
# /tmp gets a writable one.
_HIDDEN_DIRS = ("/root", "/home", "/run", "/var/tmp", "/dev/shm")


def _launch(argv: list[str]) -> None:
    """Set up limits (and namespaces), then exec the program; report setup errors on `status_fd`."""
    isolation = argv[0]
    cpu, memory, fsize, nofile, nproc, scratch, status_fd = map(int, argv[1:])
    os.set_inheritable(status_fd, False)  # closed by exec: the program never sees it
    try:
        # the base interpreter, not a venv's symlink; resolved now, while the venv is visible (it may
        # live under /tmp, which the namespaces mode covers with a private tmpfs)
        python = os.path.realpath(sys.executable)
        source = sys.stdin.buffer.read()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        _set_limits(cpu, memory, fsize, nofile)
        if isolation == "namespaces":
            _launch_in_namespaces(source, nproc, scratch, status_fd, python)
        else:
            if os.geteuid() == 0:
                _become_nobody()
            _limit_processes(nproc + _count_own_processes())
            with open(PROGRAM_NAME, "wb") as fh:
                fh.write(source)
            _exec_program(status_fd, python)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises SandboxError
        os.write(status_fd, f"{type(exc).__name__}: {exc}".encode())
        os._exit(_SETUP_FAILED)


def _launch_in_namespaces(source: bytes, nproc: int, scratch: int, status_fd: int, python: str) -> None:
    """New namespaces and filesystem view, then fork the program as PID 1 and wait for it.

    Root builds the filesystem view as real root (so the interpreter can stay in a
    directory `nobody` cannot read), then becomes `nobody`; anyone else builds it
    inside its new user namespace.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    namespaces = _CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID | _CLONE_NEWIPC
    if os.geteuid() == 0:
        _unshare(libc, _CLONE_NEWNS)
        _hide_private_dirs(libc)
        _become_nobody()
        _ok(libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0), "DUMPABLE")  # else /proc/self stays root's
        _unshare(libc, namespaces)  # a mount namespace of its own too, to mount /proc below
    else:
        _unshare(libc, namespaces)
        _hide_private_dirs(libc)
    _lock_filesystem(libc, source, scratch)
    _limit_processes(nproc)  # after CLONE_NEWUSER: counts this sandbox's processes only
    pid = os.fork()
    if pid == 0:  # PID 1 of the new PID namespace: when it dies, all its descendants die
        try:
            _ok(libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0), "PDEATHSIG")  # dies with the launcher
            _ok(libc.mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None), "mount /proc")
            _unshare(libc, _CLONE_NEWUSER, _SANDBOX_UID)  # no capabilities over the mounts above
            _ok(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "NO_NEW_PRIVS")
            os.chdir("/tmp")
            _exec_program(status_fd, python)
        except BaseException as exc:  # noqa: BLE001
            os.write(status_fd, f"{type(exc).__name__}: {exc}".encode())
            os._exit(_SETUP_FAILED)
    os.close(status_fd)
    _, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    if code < 0:  # die of the program's fatal signal, so the parent sees it
        import signal

        try:
            signal.signal(-code, signal.SIG_DFL)
        except OSError:
            pass  # SIGKILL: always the default
        os.kill(os.getpid(), -code)
    os._exit(code if code >= 0 else 128 - code)


def _hide_private_dirs(libc) -> None:
    """Cover homes and shared scratch dirs with empty tmpfs mounts (secrets live there).

    The interpreter's own tree is bound back in when it lives under one of them
    (pyenv in /root, conda in a home).
    """
    _ok(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "private mounts")  # nothing leaks out
    hidden = {os.path.realpath(d) for d in _HIDDEN_DIRS + (_home(),) if d and os.path.isdir(d)} - {"/"}
    prefix = os.path.realpath(sys.base_prefix)
    python_dir = os.path.dirname(os.path.realpath(sys.executable))
    keep = [prefix] + ([] if python_dir.startswith(prefix + "/") else [python_dir])
    keep = {d: os.open(d, os.O_PATH) for d in keep if any(d == h or d.startswith(h + "/") for h in hidden)}
    for directory in sorted(hidden):
        _mount_tmpfs(libc, directory, "size=64k,mode=755")
    for directory, fd in keep.items():
        os.makedirs(directory, exist_ok=True)
        _ok(libc.mount(f"/proc/self/fd/{fd}".encode(), directory.encode(), None, _MS_BIND | _MS_REC, None),
            f"bind {directory}")
        os.close(fd)


def _lock_filesystem(libc, source: bytes, scratch: int) -> None:
    """Everything read-only, then a private size-limited tmpfs on /tmp holding the program."""
    import ctypes

    attr = (ctypes.c_uint64 * 4)(_MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID, 0, 0, 0)  # /dev/null stays usable
    args = (_SYS_MOUNT_SETATTR, _AT_FDCWD, b"/", _AT_RECURSIVE, attr, ctypes.sizeof(attr))
    _ok(libc.syscall(*(ctypes.c_long(a) if isinstance(a, int) else a for a in args)), "read-only /")
    _mount_tmpfs(libc, "/tmp", f"size={scratch},nr_inodes=4096,mode=1777")
    with open(f"/tmp/{PROGRAM_NAME}", "wb") as fh:
        fh.write(source)


def _mount_tmpfs(libc, path: str, options: str) -> None:
    _ok(libc.mount(b"tmpfs", path.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options.encode()),
        f"tmpfs on {path}")


def _home() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return ""


def _become_nobody() -> None:
    """Root drops to `nobody`: RLIMIT_NPROC never binds real uid 0, and root may read everything."""
    os.setgroups([])
    os.setgid(_NOBODY)
    os.setuid(_NOBODY)


def _exec_program(status_fd: int, python: str) -> None:
    os.write(status_fd, _EXEC_MARK)
    os.execve(python, [python, "-I", "-S", "-X", "utf8", PROGRAM_NAME], {})


def _set_limits(cpu: int, memory: int, fsize: int, nofile: int) -> None:
    import resource

    for limit, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, memory),
                         (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_NOFILE, nofile),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))


def _limit_processes(nproc: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _count_own_processes() -> int:
    """Processes of our uid (without a user namespace RLIMIT_NPROC counts all of them)."""
    uid, count = str(os.getuid()), 0
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/status") as fh:
                count += any(line.startswith("Uid:") and line.split()[1] == uid for line in fh)
        except OSError:
            continue
    return count


def _ok(ret: int, what: str) -> None:
    if ret != 0:
        import ctypes

        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _unshare(libc, flags: int, inner_id: int = 0) -> None:
    """unshare(flags); with CLONE_NEWUSER, map our uid/gid to `inner_id` in the new namespace."""
    uid, gid = os.geteuid(), os.getegid()
    _ok(libc.unshare(flags), "unshare")
    if flags & _CLONE_NEWUSER:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{inner_id} {uid} 1"),
                           ("gid_map", f"{inner_id} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)


if __name__ == "__main__" and sys.argv[1:2] == ["--launch"]:
    _launch(sys.argv[2:])  # never returns: exec or _exit

# ---------------------------------------------------------------------------
# Parent side (imported after the launcher's early exit above: keeps its start-up fast)
# ---------------------------------------------------------------------------

import selectors  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402


class SandboxError(RuntimeError):
    """The sandbox itself could not run a program (not the program's fault)."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits; `timeout` is wall-clock seconds (RLIMIT_CPU is timeout + 1)."""

    timeout: float = 5.0
    memory_mb: int = 512  # RLIMIT_AS
    max_output_kb: int = 64  # stdout beyond this kills the run ("output limit")
    max_file_kb: int = 1024  # RLIMIT_FSIZE: the largest file the program may write
    max_open_files: int = 32  # RLIMIT_NOFILE
    max_processes: int = 32  # RLIMIT_NPROC (per sandbox under "namespaces")
    scratch_mb: int = 16  # size of the private /tmp under "namespaces"
    stderr_keep: int = 2000  # bytes of stderr tail kept for the failure reason


@dataclass(frozen=True)
class RunResult:
    status: str  # ok | error | timeout | output limit | memory | cpu time | killed
    returncode: int | None  # negative: killed by that signal; None when the sandbox killed it
    stdout: str  # at most Limits.max_output_kb
    stderr: str  # the last Limits.stderr_keep bytes
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def reason(self, limit: int = 200) -> str:
        """A one-line failure reason: "timeout", "memory", "exit 1: NameError: ...", ..."""
        if self.status == "killed" and self.returncode is not None:
            return f"killed by {signal.Signals(-self.returncode).name}"
        if self.status != "error":
            return self.status
        last = next((line.strip() for line in reversed(self.stderr.splitlines()) if line.strip()), "")
        text = f"exit {self.returncode}: {last}" if last else f"exit {self.returncode}"
        return text if len(text) <= limit else text[: limit - 3] + "..."


class Sandbox:
    """Runs Python programs under `limits`; `isolation` is "auto" or one of ISOLATIONS.

    Construction runs `print("ok")` under the same limits (so a memory limit too
    small for Python itself fails here, not as a zero for every program).
    "auto" takes "namespaces" when that works, else "rlimits" with a logged
    warning; an isolation that does not work here raises SandboxError. The
    result is cached per interpreter and limits. `run` is thread-safe.
    """

    def __init__(self, limits: Limits | None = None, isolation: str = "auto", python: str | None = None):
        if isolation not in ("auto",) + ISOLATIONS:
            raise ValueError(f"isolation: {isolation!r} is not one of auto, {', '.join(ISOLATIONS)}")
        self.limits = limits or Limits()
        self.python = python or sys.executable
        self.isolation = _probe(self.python, self.limits, ISOLATIONS if isolation == "auto" else (isolation,))

    def run(self, source: str) -> RunResult:
        return _run(self.python, self.isolation, self.limits, source)


_probed: dict[tuple, str] = {}
_probe_lock = threading.Lock()


def _probe(python: str, limits: Limits, isolations: tuple[str, ...]) -> str:
    """The first of `isolations` that runs a trivial program; SandboxError with every reason if none does."""
    limits = replace(limits, timeout=max(limits.timeout, 30.0))  # a slow first start is no failure
    with _probe_lock:
        key = (python, limits, isolations)
        if key not in _probed:
            errors = []
            for isolation in isolations:
                try:
                    result = _run(python, isolation, limits, 'print("ok")')
                    if result.stdout.strip() == "ok":
                        _probed[key] = isolation
                        break
                    errors.append(f"{isolation}: cannot run {python}: {result.reason()}")
                except SandboxError as exc:
                    errors.append(f"{isolation}: {exc}")
            else:
                raise SandboxError(f"cannot run Python in a sandbox: {'; '.join(errors)}")
            if errors:
                from selftrain.logging import log

                log(f"WARNING: code sandbox: {errors[0]}; using {_probed[key]!r} isolation: programs can reach "
                    "the network and write wherever their user may (see selftrain/sandbox.py)")
        return _probed[key]


def _run(python: str, isolation: str, limits: Limits, source: str) -> RunResult:
    """One run: start the launcher, feed it the source, collect capped output, clean up."""
    workdir = tempfile.mkdtemp(prefix="selftrain-sandbox-") if isolation == "rlimits" else None
    if workdir and os.geteuid() == 0:
        os.chown(workdir, _NOBODY, _NOBODY)  # the launcher drops to nobody before writing there
    status_r, status_w = os.pipe()
    args = [isolation, int(limits.timeout) + 1, limits.memory_mb << 20, limits.max_file_kb << 10,
            limits.max_open_files, limits.max_processes, limits.scratch_mb << 20, status_w]
    started = time.monotonic()
    try:
        try:
            proc = subprocess.Popen(
                [python, "-I", "-S", os.path.abspath(__file__), "--launch", *map(str, args)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={}, cwd=workdir or "/", start_new_session=True, pass_fds=(status_w,))
        except OSError as exc:
            raise SandboxError(f"cannot start {python}: {exc}") from None
        finally:
            os.close(status_w)
        with proc:
            try:
                killed, stdout, stderr = _supervise(proc, source.encode("utf-8", "surrogatepass"),
                                                    started + limits.timeout, limits)
            finally:
                # Not reaped yet, so its group id cannot have been reused: sweep the group
                # (strays under "rlimits"; under "namespaces" they died with PID 1).
                _kill_group(proc.pid)
        setup = _read_available(status_r)
    finally:
        os.close(status_r)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if setup != _EXEC_MARK:
        detail = setup.replace(_EXEC_MARK, b"").decode("utf-8", "replace").strip()
        if not detail:
            detail = (f"killed ({killed}) before the program started" if killed else
                      f"launcher exited with {proc.returncode}: {stderr.decode('utf-8', 'replace')[-300:]}")
        raise SandboxError(f"sandbox setup failed ({isolation}): {detail}")
    status = killed or _classify(proc.returncode, stderr)
    return RunResult(status, None if killed else proc.returncode, stdout.decode("utf-8", "replace"),
                     stderr.decode("utf-8", "replace"), time.monotonic() - started)


def _supervise(proc: subprocess.Popen, source: bytes, deadline: float, limits: Limits):
    """Feed the source, then read stdout/stderr until the launcher exits or must be killed.

    Returns (why we killed it or None, stdout, stderr tail). Never reaps the launcher.
    """
    try:
        proc.stdin.write(source)  # the launcher reads all of it before anything else
        proc.stdin.close()
    except BrokenPipeError:
        pass  # it died during setup; the status pipe says why
    out_cap = limits.max_output_kb << 10
    stdout, stderr = bytearray(), bytearray()
    pidfd = os.pidfd_open(proc.pid)  # readable once the launcher has exited (not reaped)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, stdout)
    sel.register(proc.stderr, selectors.EVENT_READ, stderr)
    sel.register(pidfd, selectors.EVENT_READ, None)
    killed, exited = None, False
    try:
        while len(sel.get_map()) > 0:
            if exited:
                timeout = 0  # drain what is buffered; only a stray could keep a pipe open
            else:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    killed = "timeout"
                    break
            events = sel.select(timeout)
            if exited and not events:
                break
            for key, _ in events:
                if key.data is None:
                    exited = True
                    sel.unregister(pidfd)
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if key.data is stderr and len(stderr) > 2 * limits.stderr_keep:
                    del stderr[: -limits.stderr_keep]
            if len(stdout) > out_cap:
                killed = "output limit"
                break
    finally:
        sel.close()
        os.close(pidfd)
    if killed:
        _kill_group(proc.pid)
    return killed, bytes(stdout[:out_cap]), bytes(stderr[-limits.stderr_keep:])


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_available(fd: int) -> bytes:
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def _classify(returncode: int, stderr: bytes) -> str:
    if returncode == 0:
        return "ok"
    if returncode == -signal.SIGXCPU:
        return "cpu time"
    if returncode < 0:
        return "killed"
    lines = stderr.decode("utf-8", "replace").rstrip().splitlines()
    if lines and lines[-1].startswith("MemoryError"):
        return "memory"
    return "error"
