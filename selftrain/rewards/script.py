"""Custom scoring script (seed 000, "3. Custom Script"), run exactly as the seed's template expects:

    python SCRIPT --input IN.jsonl --output OUT.jsonl --function <script_function>

IN holds one JSON object per line (ASCII-escaped, so any default encoding reads
it): the record as judged (`id`, `prompt_id`, `response`, `metadata`, ...) with
`prompt` set to the question it answers (`question_of`: its `prompt`, else
its last user message, else `prompt_text`). The script writes OUT: one object
per input record with a numeric `reward_score`. Output records that keep their
`id` (the template copies each item) are matched to inputs by id, in any order;
output without ids is matched by position.

The script runs under this Python (`sys.executable`) in the current directory,
the one a relative `script_path` is resolved against, as in a hand run; its
stdout and stderr are captured and `script_timeout` bounds the whole run (the
script and anything it started are killed then). A non-zero exit, a missing or
empty OUT, a wrong count, an unknown id, or a `reward_score` that is missing or
not a finite number stops the stage with an InputError naming the script, the
output line and field, plus the tail of the script's stderr; IN and OUT are then
kept in their temporary folder for a look. No score is ever filled in.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict, deque
from pathlib import Path

from selftrain.errors import InputError
from selftrain.logging import log
from selftrain.rewards import question_of
from selftrain.rewards.api import check_score

STDERR_TAIL = 20  # lines of the script's stderr quoted in an error


class ScriptReward:
    name = "script"
    verifiable = False

    def __init__(self, config):
        rc = config.reward_config
        if not rc.script_path:
            raise InputError("reward_config.script_path: missing (the script reward needs a scoring script; "
                             "see the seed's template)")
        path = Path(rc.script_path).expanduser()
        if not path.is_file():
            where = "" if path.is_absolute() else f" (relative to the current directory {Path.cwd()})"
            raise InputError(f"reward_config.script_path: {rc.script_path}: file not found{where}")
        if rc.script_timeout <= 0:
            raise InputError(f"reward_config.script_timeout: {rc.script_timeout} must be > 0")
        self.script, self.function, self.timeout = path.resolve(), rc.script_function, rc.script_timeout

    def score(self, records: list[dict]) -> list[dict]:
        if not records:
            return []
        lines = [json.dumps({**record, "prompt": question_of(record)}) + "\n" for record in records]
        workdir = Path(tempfile.mkdtemp(prefix="selftrain-script-"))
        started = time.time()
        scores = self._score_in(workdir, records, lines)
        shutil.rmtree(workdir, ignore_errors=True)
        log(f"reward script {self.script.name}: {len(records)} records scored in {time.time() - started:.1f} s")
        return [{"reward_score": s, "is_correct": None, "answer_found": True} for s in scores]

    def _score_in(self, workdir: Path, records: list[dict], lines: list[str]) -> list[float]:
        source, target = workdir / "input.jsonl", workdir / "output.jsonl"
        source.write_text("".join(lines), encoding="utf-8")
        command = [sys.executable, str(self.script), "--input", str(source), "--output", str(target),
                   "--function", self.function]
        code, stream, tail = _run(command, self.timeout)

        def fail(what: str) -> InputError:
            message = f"reward script {self.script}: {what} (input and output kept in {workdir})"
            if tail:
                message += f"\n  script {stream} (last {STDERR_TAIL} lines):\n" + "\n".join(f"  | {t}" for t in tail)
            return InputError(message)

        if code is None:
            raise fail(f"still running after script_timeout={self.timeout} s; stopped")
        if code != 0:
            raise fail(f"exited with code {code}")
        hint = f"did the script handle --function {self.function}?"
        if not target.is_file():
            raise fail(f"wrote no output file ({hint})")
        rows = []
        for lineno, line in enumerate(target.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise fail(f"output line {lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise fail(f"output line {lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append((lineno, row))
        if not rows:
            raise fail(f"wrote an empty output file ({hint})")
        if len(rows) != len(records):
            raise fail(f"output has {len(rows)} records for {len(records)} input records (one each, please)")
        order = _match(records, rows, fail)
        scores = [0.0] * len(records)
        for (lineno, row), position in zip(rows, order):
            if "reward_score" not in row:
                raise fail(f"output line {lineno}: reward_score: missing")
            try:
                scores[position] = check_score(row["reward_score"])
            except ValueError as exc:
                raise fail(f"output line {lineno}: reward_score: {exc}") from None
        return scores


def _match(records: list[dict], rows: list[tuple[int, dict]], fail) -> list[int]:
    """The input position of each output row: by `id` when the rows keep ids, else by order."""
    with_id = [("id" in row) for _, row in rows]
    if not any(with_id):
        return list(range(len(rows)))
    if not all(with_id):
        lineno = rows[with_id.index(False)][0]
        raise fail(f"output line {lineno}: id: missing (other lines have one; keep every record's id, or none)")
    positions = defaultdict(deque)  # id -> input positions not yet matched (ids repeat only in hand-made input)
    for i, record in enumerate(records):
        positions[json.dumps(record.get("id"))].append(i)
    order = []
    for lineno, row in rows:
        key = json.dumps(row["id"])
        if not positions[key]:
            raise fail(f"output line {lineno}: id: {key} is not an input record's id (or appears twice)")
        order.append(positions[key].popleft())
    return order


def _run(command: list[str], timeout: float) -> tuple[int | None, str, list[str]]:
    """Run the script in its own process group.

    Returns the exit code (None on timeout), then the name and last lines of its
    stderr, or of its stdout when stderr is empty.
    """
    timed_out = False
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)  # the script and anything it started
            stdout, stderr = process.communicate()
        except BaseException:  # Ctrl-C: the script must not outlive the stage
            os.killpg(process.pid, signal.SIGKILL)
            raise
    stream, text = ("stderr", stderr) if stderr.strip() else ("stdout", stdout)
    tail = text.decode("utf-8", "replace").splitlines()[-STDERR_TAIL:]
    return None if timed_out else process.returncode, stream, tail
