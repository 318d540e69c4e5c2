"""Tests for the `code` reward (selftrain.rewards.code) and its sandbox (selftrain.sandbox).

Every program really runs. Hostile programs (infinite loop, fork bombs, memory
bomb, secret reading, writing outside, huge output, network) must each fail
within their limits while the next record is still scored right. Assertions
that need namespace isolation are skipped, with the reason, where it is not
available.
"""
import os
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest

from selftrain.config import Config, RewardConfig
from selftrain.errors import InputError
from selftrain.rewards import get_reward
from selftrain.rewards.code import CodeReward, code_blocks, extract_program, normalise_output
from selftrain.sandbox import PROGRAM_NAME, Limits, Sandbox, SandboxError

TIMEOUT = 1.0
SLACK = 1.5  # seconds allowed beyond the timeout (start-up, kill, a busy 2-core machine)

FIB = "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"
FIB_CASES = [
    {"input": "print(fib(0))", "expected_output": "0"},
    {"input": "print(fib(1))", "expected_output": "1"},
    {"input": "print(fib(10))", "expected_output": "55"},
]
GOOD = {"id": "good", "response": f"```python\n{FIB}```", "metadata": {"test_cases": FIB_CASES}}


def make_reward(**overrides) -> CodeReward:
    settings = {"code_timeout": TIMEOUT, "code_workers": 2, **overrides}
    return get_reward(Config(reward_config=RewardConfig(type="rule_based", rule_type="code", **settings)))


@pytest.fixture(scope="module")
def reward():
    return make_reward()


@pytest.fixture
def isolated(reward):
    if reward.sandbox.isolation != "namespaces":
        pytest.skip(f"namespace isolation unavailable here (sandbox runs with {reward.sandbox.isolation!r})")


def record(rid: str, response: str, expected: str = "ok", test_input: str = "") -> dict:
    return {"id": rid, "response": response,
            "metadata": {"test_cases": [{"input": test_input, "expected_output": expected}]}}


def score_then_good(reward, hostile: dict) -> dict:
    """Score a hostile record followed by a good one; the good one must still pass."""
    started = time.monotonic()
    bad, good = reward.score([hostile, GOOD])
    assert time.monotonic() - started < TIMEOUT + SLACK
    assert (good["reward_score"], good["is_correct"], good["tests_passed"]) == (1.0, True, 3)
    assert (bad["reward_score"], bad["is_correct"], bad["tests_passed"]) == (0.0, False, 0)
    assert len(bad["code_failures"]) == 1
    return bad


def sandbox_processes() -> list[str]:
    """Live processes running a sandboxed program (forked children share its command line)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if PROGRAM_NAME.encode() in cmdline:
            found.append(f"{pid}: {cmdline!r}")
    return found


# --- scoring ------------------------------------------------------------------

def test_correct_fenced_program_passes_every_case(reward):
    [result] = reward.score([GOOD])
    assert result == {"reward_score": 1.0, "is_correct": True, "answer_found": True,
                      "tests_passed": 3, "tests_total": 3, "code_failures": []}


def test_partly_wrong_program_scores_the_fraction_passed(reward):
    wrong_for_zero = FIB.replace("a, b = 0, 1", "a, b = (1, 1) if n == 0 else (0, 1)")
    [result] = reward.score([{"id": "p", "response": f"Here:\n```py\n{wrong_for_zero}```\nDone.",
                              "metadata": {"test_cases": FIB_CASES}}])
    assert result["reward_score"] == pytest.approx(2 / 3)
    assert (result["is_correct"], result["tests_passed"], result["tests_total"]) == (False, 2, 3)
    assert result["code_failures"] == ["test 1: wrong output: got '1'"]


def test_bare_code_without_a_fence_is_run(reward):
    [result] = reward.score([{"id": "bare", "response": FIB, "metadata": {"test_cases": FIB_CASES}}])
    assert (result["reward_score"], result["is_correct"]) == (1.0, True)


@pytest.mark.parametrize("printed", ["15", "5\\n6", "6\\n5", "55", "x5"])
def test_output_must_match_whole_not_as_substring(reward, printed):
    [result] = reward.score([record("sub", f'print("{printed}")', expected="5")])
    assert (result["reward_score"], result["is_correct"]) == (0.0, False)
    assert result["code_failures"][0].startswith("test 1: wrong output")


def test_output_is_normalised_on_both_sides(reward):
    program = 'print()\nprint("a  ")\nprint("b\\t")\nprint()\nprint()'
    [result] = reward.score([record("norm", program, expected="\r\na\r\nb \r\n\n")])
    assert result["is_correct"] is True


def test_crash_after_the_right_output_fails_with_a_short_reason(reward):
    program = 'print(5)\n' + 'raise ValueError("' + 'x' * 1000 + '")'
    [result] = reward.score([record("crash", program, expected="5")])
    assert result["is_correct"] is False
    [failure] = result["code_failures"]
    assert failure.startswith("test 1: exit 1: ValueError: xxx") and len(failure) < 220


def test_name_error_reason(reward):
    [result] = reward.score([record("ne", "x = 1", expected="55", test_input="print(fib(10))")])
    assert result["code_failures"] == ["test 1: exit 1: NameError: name 'fib' is not defined"]


def test_reply_without_program_is_not_an_answer(reward):
    [result] = reward.score([{"id": "none", "response": "```bash\nls\n```",
                              "metadata": {"test_cases": FIB_CASES}}])
    assert result["answer_found"] is False
    assert (result["reward_score"], result["tests_passed"], result["tests_total"]) == (0.0, 0, 3)


def test_missing_test_cases_names_record_and_field(reward):
    with pytest.raises(InputError, match=r"record r7: metadata\.test_cases: missing"):
        reward.score([GOOD, {"id": "r7", "response": FIB, "metadata": {"expected_answer": "1"}}])
    with pytest.raises(InputError, match=r"record r8: metadata\.test_cases\[0\]\.expected_output"):
        reward.score([{"id": "r8", "response": FIB, "metadata": {"test_cases": [{"input": "print(1)"}]}}])


def test_records_are_scored_in_order_with_cases_in_parallel(reward):
    slow = "import time\ntime.sleep(0.3)\nprint('ok')"
    started = time.monotonic()
    results = reward.score([record(str(i), slow) for i in range(4)] + [GOOD])
    assert [r["is_correct"] for r in results] == [True] * 5
    assert time.monotonic() - started < 4 * 0.3  # two workers, not one after another


# --- program extraction -----------------------------------------------------

def test_extraction_prefers_last_python_block_that_defines_something():
    reply = ("```python\ndef f():\n    return 1\n```\n```python\ndef f():\n    return 2\n```\n"
             "Usage:\n```python\nprint(f())\n```\nOutput:\n```\n2\n```")
    assert extract_program(reply) == "def f():\n    return 2"


def test_extraction_rules_for_tags_and_unclosed_fences():
    assert extract_program("```\nprint(1)\n```") == "print(1)"  # untagged when no python block
    assert extract_program("```text\n1\n```\n```Python3\nprint(2)\n```") == "print(2)"
    assert extract_program("```js\nx\n```") == ""  # other languages never count
    assert extract_program("Sure:\n```python\ndef g():\n    pass") == "def g():\n    pass"  # cut off
    assert extract_program("   \n") == ""
    assert code_blocks("~~~py\na\n~~~\n````\nb\n```\n````") == [("py", "a"), ("", "b\n```")]


def test_normalise_output():
    assert normalise_output("\n\n a \r\nb\t\n\n") == " a\nb"
    assert normalise_output("5\n6") != normalise_output("5")


# --- hostile programs -------------------------------------------------------

def test_infinite_loop_times_out(reward):
    bad = score_then_good(reward, record("loop", "while True:\n    pass"))
    assert bad["code_failures"] == ["test 1: timeout"]


def test_sleeping_program_times_out(reward):
    bad = score_then_good(reward, record("sleep", "import time\ntime.sleep(60)\nprint('ok')"))
    assert bad["code_failures"] == ["test 1: timeout"]


@pytest.mark.parametrize("body", [
    "while True:\n    os.fork()",
    "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass",  # keeps trying until killed
    "for _ in range(8):\n    if os.fork() == 0:\n        os.setsid()\n        time.sleep(60)",  # escapes the group
])
def test_fork_bombs_are_contained_and_leave_no_processes(reward, body):
    score_then_good(reward, record("fork", f"import os, time\n{body}\nprint('ok')", expected="unreachable"))
    time.sleep(0.2)
    survivors = sandbox_processes()
    assert not survivors, survivors


@pytest.mark.parametrize("program", ["x = 'a' * 10**10\nprint('ok')",
                                     "chunks = []\nwhile True:\n    chunks.append(bytearray(10**6))"])
def test_memory_bombs_hit_the_memory_limit(program):
    reward = make_reward(code_memory_mb=128)
    bad = score_then_good(reward, record("mem", program))
    assert bad["code_failures"] == ["test 1: memory"]


def test_environment_secret_is_not_visible(reward, monkeypatch):
    monkeypatch.setenv("SELFTRAIN_TEST_SECRET", "s3cr3t")
    program = "import os\nprint(os.environ.get('SELFTRAIN_TEST_SECRET'))"
    bad = score_then_good(reward, record("env", program, expected="s3cr3t"))
    assert bad["code_failures"] == ["test 1: wrong output: got 'None'"]


def test_other_processes_are_invisible(reward, isolated):
    program = f"print(open('/proc/{os.getpid()}/cmdline').read() and 'visible')"
    bad = score_then_good(reward, record("proc", program, expected="visible"))
    assert "FileNotFoundError" in bad["code_failures"][0]


def test_writing_outside_the_sandbox_fails(reward, tmp_path):
    target = tmp_path / "escaped.txt"
    program = f"open({str(target)!r}, 'w').write('pwned')\nprint('ok')"
    score_then_good(reward, record("write", program))
    assert not target.exists()


def test_filesystem_is_read_only_outside_scratch(reward, isolated):
    target = Path(__file__).resolve().parent / f".sandbox-escape-{uuid.uuid4().hex}"
    program = f"open({str(target)!r}, 'w').write('pwned')\nprint('ok')"
    try:
        bad = score_then_good(reward, record("write", program))
        assert not target.exists()
        # read-only, or not even visible when the checkout lives under /tmp (covered by the private /tmp)
        assert any(reason in bad["code_failures"][0] for reason in ("Read-only file system", "No such file"))
    finally:
        target.unlink(missing_ok=True)


def test_scratch_files_work_but_are_size_limited(reward):
    small = "open('scratch.txt', 'w').write('hi')\nprint(open('scratch.txt').read())"
    big = "open('big.bin', 'wb').write(b'x' * (2 << 20))\nprint('ok')"
    small_result, big_result = reward.score([record("small", small, expected="hi"), record("big", big)])
    assert small_result["is_correct"] is True
    assert big_result["is_correct"] is False and "File too large" in big_result["code_failures"][0]


@pytest.mark.parametrize("program", ["print('x' * 10**8)", "while True:\n    print('x' * 1000)"])
def test_huge_output_is_cut_at_the_cap(program):
    reward = make_reward(code_max_output_kb=16)
    started = time.monotonic()
    bad = score_then_good(reward, record("out", program, expected="x"))
    assert bad["code_failures"] == ["test 1: output limit"]
    assert time.monotonic() - started < TIMEOUT  # killed at the cap, not at the timeout


def test_network_is_unreachable(reward, isolated):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        program = (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n"
                   "print('connected')")
        bad = score_then_good(reward, record("net", program, expected="connected"))
        assert "Network is unreachable" in bad["code_failures"][0]
        with pytest.raises(BlockingIOError):
            listener.accept()


# --- the sandbox itself -------------------------------------------------------

def test_sandbox_failure_raises_instead_of_scoring_zero(reward, monkeypatch):
    monkeypatch.setattr(reward.sandbox, "python", "/nonexistent/python3")
    with pytest.raises(SandboxError, match="cannot start /nonexistent/python3"):
        reward.score([GOOD])


def test_sandbox_refuses_an_unusable_interpreter():
    with pytest.raises(SandboxError):
        Sandbox(Limits(timeout=TIMEOUT), python="/nonexistent/python3")


def test_rlimits_fallback_still_limits_time_and_output():
    for python in (sys.executable, "/usr/bin/python3"):
        try:
            sandbox = Sandbox(Limits(timeout=TIMEOUT, max_output_kb=4), isolation="rlimits", python=python)
            break
        except SandboxError as exc:
            reason = str(exc)
    else:
        pytest.skip(f"rlimits-only sandbox cannot run here: {reason}")
    assert sandbox.run("print(6 * 7)").stdout == "42\n"
    assert sandbox.run("while True:\n    pass").status == "timeout"
    assert sandbox.run("while True:\n    print('x' * 100)").status == "output limit"
    assert sandbox.run("import os\nprint(os.environ.get('PATH'))").stdout == "None\n"
