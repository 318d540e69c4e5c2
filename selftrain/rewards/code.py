"""Rule-based code reward: run the reply's program on the record's test cases, in a sandbox.

Each record needs `metadata.test_cases = [{"input": str, "expected_output": str}]`
(seed 000, "Code Tasks with Test Cases"). For every case the program plus "\\n"
plus the case's `input` (usually a call such as `print(fib(10))`) runs as one
Python file in selftrain.sandbox, and the case passes when the run exits 0 and
its WHOLE stdout equals `expected_output` after normalising both sides (line
endings to "\\n", trailing whitespace of each line and leading/trailing blank
lines dropped). Never a substring match: expected "5" does not match "15" or
"5\\n6". The program runs as `__main__`, so demo code it runs at top level or
under `if __name__ == "__main__":` prints too and makes the output wrong.

Which program (the extraction rule):
* no fenced block in the reply: the whole reply (bare code);
* else the fenced blocks tagged python/py/python3/py3 (any case), or, when no
  block is tagged so, the untagged ones; blocks in other languages never count;
* of those, the last one that defines a top-level function or class (so a
  trailing usage example does not replace the solution), else the last one.
An unclosed final fence (a reply cut off at max_tokens) runs to the end of the reply.

Result fields: reward_score (fraction of cases passed), is_correct (all passed),
answer_found (a non-empty program was found), tests_passed, tests_total and
code_failures (one short reason per failed case, e.g. "test 2: timeout",
"test 1: exit 1: NameError: name 'fib' is not defined", "test 3: wrong output: got '15'").
A hostile or broken program only fails its own cases; a sandbox that cannot run
at all raises SandboxError instead of scoring anything.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

from selftrain.config import RewardConfig
from selftrain.errors import InputError
from selftrain.sandbox import Limits, RunResult, Sandbox

PYTHON_TAGS = ("python", "py", "python3", "py3")
_FENCE_OPEN = re.compile(r"^(`{3,}|~{3,})\s*([^\s`]*)")
_DEFINES = re.compile(r"^(?:async\s+def|def|class)\s+\w", re.M)
_GOT_LIMIT = 60  # characters of wrong output quoted in a failure reason


class CodeReward:
    name = "rule_based/code"
    verifiable = True

    def __init__(self, config=None):
        self.config = config
        rc = config.reward_config if config is not None else RewardConfig()
        self.workers = max(1, int(rc.code_workers))
        self.sandbox = Sandbox(Limits(timeout=float(rc.code_timeout), memory_mb=int(rc.code_memory_mb),
                                      max_output_kb=int(rc.code_max_output_kb)))

    def score(self, records: list[dict]) -> list[dict]:
        cases = [_test_cases(record) for record in records]  # all input errors before any run
        programs = [extract_program(record.get("response") or "") for record in records]
        jobs = [(i, case) for i, program in enumerate(programs) if program for case in cases[i]]

        def run(job: tuple[int, dict]) -> RunResult:
            i, case = job
            return self.sandbox.run(programs[i] + "\n" + case["input"])

        with ThreadPoolExecutor(self.workers) as pool:  # threads only wait on sandbox processes
            runs = list(pool.map(run, jobs))
        outcomes: list[list[str | None]] = [[] for _ in records]  # per case: None (passed) or a reason
        for (i, case), run in zip(jobs, runs):
            outcomes[i].append(_failure(run, case["expected_output"]))
        return [_result(program, record_cases, outcome)
                for program, record_cases, outcome in zip(programs, cases, outcomes)]


def extract_program(response: str) -> str:
    """The program in a reply, by the rule in the module docstring ("" when there is none)."""
    blocks = code_blocks(response)
    if not blocks:
        return response.strip()
    candidates = [code for tag, code in blocks if tag in PYTHON_TAGS] or [code for tag, code in blocks if not tag]
    defining = [code for code in candidates if _DEFINES.search(code)]
    chosen = (defining or candidates or [""])[-1]
    return chosen.strip("\n") if chosen.strip() else ""


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(lower-cased tag, code) of each fenced block (``` or ~~~), in order."""
    blocks, fence, tag, lines = [], None, "", []
    for line in text.splitlines():
        stripped = line.strip()
        if fence is None:
            match = _FENCE_OPEN.match(stripped)
            if match:
                fence, tag, lines = match.group(1), match.group(2).lower(), []
        elif stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
            blocks.append((tag, "\n".join(lines)))
            fence = None
        else:
            lines.append(line)
    if fence is not None:  # unclosed: runs to the end of the reply
        blocks.append((tag, "\n".join(lines)))
    return blocks


def normalise_output(text: str) -> str:
    """Line endings to \\n, no trailing whitespace per line, no leading/trailing blank lines."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def _test_cases(record: dict) -> list[dict]:
    where = f"record {record.get('id')}: metadata.test_cases"
    cases = (record.get("metadata") or {}).get("test_cases")
    if cases is None:
        raise InputError(f"{where}: missing (code scoring needs it)")
    if not isinstance(cases, list) or not cases:
        raise InputError(f"{where}: expected a non-empty list of {{input, expected_output}}")
    for j, case in enumerate(cases):
        for key in ("input", "expected_output"):
            if not isinstance(case, dict) or not isinstance(case.get(key), str):
                raise InputError(f"{where}[{j}].{key}: expected a string")
    return cases


def _failure(run: RunResult, expected: str) -> str | None:
    """None when the case passed, else a short reason."""
    if not run.ok:
        return run.reason()
    got = normalise_output(run.stdout)
    if got == normalise_output(expected):
        return None
    quoted = repr(got if len(got) <= _GOT_LIMIT else got[:_GOT_LIMIT] + "...")
    return f"wrong output: got {quoted}"


def _result(program: str, cases: list[dict], outcome: list[str | None]) -> dict:
    if not program:
        return {"reward_score": 0.0, "is_correct": False, "answer_found": False, "tests_passed": 0,
                "tests_total": len(cases), "code_failures": ["no program in the response"]}
    passed = sum(reason is None for reason in outcome)
    return {
        "reward_score": passed / len(cases),
        "is_correct": passed == len(cases),
        "answer_found": True,
        "tests_passed": passed,
        "tests_total": len(cases),
        "code_failures": [f"test {j + 1}: {reason}" for j, reason in enumerate(outcome) if reason is not None],
    }
