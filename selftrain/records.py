"""Seed-000 prompt records: reading, validation, and append-only JSONL output.

Every input line is checked before a stage writes anything; a bad line stops
the stage with `path:line: field: what is wrong` (exit code 2). Only the
seed-000 shape is known here; data.py converts other source formats (GSM8K).

Output files are append-only and flushed record by record, keyed by `id`, so a
stage killed at any point resumes by skipping the ids already written; a torn
last line (the process died mid-write) is cut off on resume.
"""
from __future__ import annotations

import json
import math
import os
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterable, Iterator

from selftrain.errors import InputError

DIFFICULTIES = ("easy", "medium", "hard", "expert")
ROLES = ("system", "user", "assistant")


def _fail(path, lineno, message) -> InputError:
    return InputError(f"{path}:{lineno}: {message}")


def seeded_key(record: dict, seed: int) -> str:
    """A sort key that orders records by the seed and each record's id alone (not by their order or number):
    seeded choices among records that stay put when others are added or removed."""
    import hashlib

    return hashlib.sha1(f"{seed}:{record['id']}".encode()).hexdigest()


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a bad line is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _fail(path, lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise _fail(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_jsonl(path: str | Path, *, allow_empty: bool = False) -> list[dict]:
    rows = [obj for _, obj in iter_jsonl(path)]
    if not rows and not allow_empty:
        raise InputError(f"{path}: file is empty (no records)")
    return rows


def answer_text(answer) -> str:
    """A seed-000 `expected_answer` as the text every stage stores and compares.

    A string stays as it is; a number (the seed allows one) becomes its exact
    decimal text: 5 -> "5", 3.0 -> "3.0", 1e-07 -> "0.0000001" (never an exponent,
    which answers.normalize_number would not read). NaN and infinity are no answer to
    anything; they, booleans and everything else are a ValueError."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        raise ValueError(f"expected a string or number, got {answer!r}")
    if isinstance(answer, int):
        return str(answer)
    if not math.isfinite(answer):
        raise ValueError(f"expected a string or a finite number, got {answer!r}")
    return format(Decimal(repr(answer)), "f")  # repr: the shortest text that reads back as this float


def validate_prompt_record(obj: dict, path, lineno: int, id_prefix: str | None = None) -> dict:
    """Check one seed-000 prompt record; return it with `id` set and answers as strings."""
    has_prompt, has_messages = "prompt" in obj, "messages" in obj
    if not has_prompt and not has_messages:
        raise _fail(path, lineno, "prompt: missing (a record needs 'prompt' or 'messages')")
    if has_prompt and (not isinstance(obj["prompt"], str) or not obj["prompt"].strip()):
        raise _fail(path, lineno, f"prompt: expected a non-empty string, got {obj['prompt']!r}")
    if has_messages:
        _check_messages(obj["messages"], path, lineno)
    if "difficulty" in obj and obj["difficulty"] not in DIFFICULTIES:
        raise _fail(path, lineno, f"difficulty: {obj['difficulty']!r} is not one of {', '.join(DIFFICULTIES)}")
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _fail(path, lineno, f"metadata: expected an object, got {type(metadata).__name__}")
    metadata = dict(metadata)
    if "expected_answer" in metadata:
        try:
            metadata["expected_answer"] = answer_text(metadata["expected_answer"])
        except ValueError as exc:
            raise _fail(path, lineno, f"metadata.expected_answer: {exc}") from None
    if "category" in metadata and not isinstance(metadata["category"], str):
        raise _fail(path, lineno, f"metadata.category: expected a string, got {metadata['category']!r}")
    if "test_cases" in metadata:
        _check_test_cases(metadata["test_cases"], path, lineno)
    record = dict(obj)
    record["metadata"] = metadata
    if "id" in record:
        if not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
            raise _fail(path, lineno, f"id: expected a string, got {record['id']!r}")
        record["id"] = str(record["id"])
    else:
        record["id"] = f"{id_prefix or Path(path).stem}-{lineno:06d}"
    return record


def _check_messages(messages, path, lineno) -> None:
    if not isinstance(messages, list) or not messages:
        raise _fail(path, lineno, "messages: expected a non-empty list of {role, content}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _fail(path, lineno, f"messages[{i}]: expected an object")
        if message.get("role") not in ROLES:
            raise _fail(path, lineno, f"messages[{i}].role: {message.get('role')!r} is not one of {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise _fail(path, lineno, f"messages[{i}].content: expected a string")
    if messages[-1]["role"] != "user":
        raise _fail(path, lineno, "messages: the last message must be from the user (it is what the model answers)")


def _check_test_cases(cases, path, lineno) -> None:
    if not isinstance(cases, list) or not cases:
        raise _fail(path, lineno, "metadata.test_cases: expected a non-empty list")
    for i, case in enumerate(cases):
        if not isinstance(case, dict):
            raise _fail(path, lineno, f"metadata.test_cases[{i}]: expected an object")
        for key in ("input", "expected_output"):
            if not isinstance(case.get(key), str):
                raise _fail(path, lineno, f"metadata.test_cases[{i}].{key}: expected a string")


# What each reward needs in a record's metadata, and why (checked before anything is generated).
REQUIRED_BECAUSE = {"expected_answer": "rule-based math and yesno scoring need it",
                    "test_cases": "rule-based code scoring needs it",
                    "regex_pattern": "rule-based regex scoring needs it (or reward_config.regex_pattern)",
                    "instruction_id_list": "rule-based ifeval scoring needs it",
                    "kwargs": "rule-based ifeval scoring needs it (one object per instruction)"}


def read_prompt_records(path: str | Path, *, need_answer: bool = False, required: tuple[str, ...] = (),
                        id_prefix: str | None = None,
                        convert: Callable[[dict, int], dict] | None = None) -> list[dict]:
    """Read and validate a whole prompt file before anything is generated from it.

    `required` metadata keys must be on every record (`need_answer`: expected_answer);
    records without an `id` get `<id_prefix or file stem>-<line>`. `convert(obj, lineno)`
    turns a line of another source format into a seed-000 record first (data.py knows
    the formats); its ValueError is reported at the line."""
    required = tuple(required) + (("expected_answer",) if need_answer else ())
    records, seen = [], set()
    for lineno, obj in iter_jsonl(path):
        if convert is not None:
            try:
                obj = convert(obj, lineno)
            except ValueError as exc:
                raise _fail(path, lineno, str(exc)) from None
        record = validate_prompt_record(obj, path, lineno, id_prefix)
        for key in required:
            if key not in record["metadata"]:
                raise _fail(path, lineno, f"metadata.{key}: missing ({REQUIRED_BECAUSE.get(key, 'the reward needs it')})")
        if record["id"] in seen:
            raise _fail(path, lineno, f"id: {record['id']!r} appears twice")
        seen.add(record["id"])
        records.append(record)
    if not records:
        raise InputError(f"{path}: file is empty (no records)")
    return records


class JsonlAppender:
    """Append records to a JSONL file, one flushed line each; resume-safe.

    On open, a torn last line (no trailing newline: the writer was killed) is
    truncated, and the ids already present are loaded into `done`.
    """

    def __init__(self, path: str | Path, key: str = "id"):
        self.path, self.key = Path(path), key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set()
        if self.path.exists():
            self._repair_and_load()
        self._handle = open(self.path, "a", encoding="utf-8")

    def _repair_and_load(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as handle:
                handle.truncate(cut)
            data = data[:cut]
        # split on "\n" only: replies may hold U+2028 and friends, which splitlines() also breaks on
        for lineno, line in enumerate(data.decode("utf-8").split("\n"), 1):
            if line.strip():
                try:
                    self.done.add(json.loads(line)[self.key])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise InputError(f"{self.path}:{lineno}: cannot resume: line is not a record with '{self.key}'") from None

    def write(self, record: dict) -> None:
        key = record[self.key]
        if key in self.done:
            return
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        self.done.add(key)

    def close(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_jsonl_atomic(path: str | Path, records: Iterable[dict]) -> int:
    """Write a whole file at once (temp file + rename): readers never see half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    os.replace(tmp, path)
    return count


def reorder_jsonl(path: str | Path, keys: list[str], key: str = "id") -> None:
    """Rewrite a finished append-only file with its records in `keys` order (lines kept byte for byte).

    Appended output follows completion order, which depends on scheduling; the
    canonical order makes a run's file the same however it was produced
    (one process or merged shards)."""
    path = Path(path)
    lines = {}
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            lines[json.loads(line)[key]] = line
    if set(lines) != set(keys) or len(keys) != len(lines):
        raise InputError(f"{path}: holds {len(lines)} records, expected exactly the {len(keys)} of this step")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines[k] + "\n" for k in keys), encoding="utf-8")
    os.replace(tmp, path)
