"""Reader for GSM8K in its original format: {"question": ..., "answer": "...\\n#### 72"}."""

from __future__ import annotations

import re
from pathlib import Path

from selftrain.errors import InputError
from selftrain.records import iter_jsonl

_CALC = re.compile(r"<<[^>]*>>")  # calculator annotations like <<48/2=24>>


def _problem(raw: object) -> str | None:
    """What is wrong with a raw GSM8K row, or None if it is usable."""
    if not isinstance(raw, dict):
        return "expected a JSON object"
    for field in ("question", "answer"):
        if not isinstance(raw.get(field), str):
            return f"{field}: missing or not a string"
    if "####" not in raw["answer"]:
        return "answer: no '#### <number>' final answer"
    if not raw["answer"].rsplit("####", 1)[1].strip():
        return "answer: nothing after '####'"
    return None


def is_gsm8k_record(raw: dict) -> bool:
    """True for a GSM8K-style row (question + answer with '####'), not one of our own formats."""
    return (isinstance(raw, dict) and "prompt" not in raw and "messages" not in raw
            and isinstance(raw.get("question"), str)
            and isinstance(raw.get("answer"), str) and "####" in raw["answer"])


def convert_gsm8k_record(raw: dict, index: int, split: str) -> dict:
    """GSM8K row -> task record with expected answer and cleaned reference rationale."""
    if (problem := _problem(raw)) is not None:
        raise ValueError(problem)
    rationale, final = raw["answer"].rsplit("####", 1)
    return {
        "id": f"gsm8k-{split}-{index:06d}",
        "prompt": raw["question"],
        "metadata": {
            "expected_answer": final.strip().replace(",", ""),
            "category": "gsm8k",
            "reference_rationale": _CALC.sub("", rationale).strip(),
        },
    }


def _read_jsonl(path: Path, split: str) -> list[dict]:
    records = []
    for lineno, raw in iter_jsonl(path):
        if (problem := _problem(raw)) is not None:
            raise InputError(f"{path}:{lineno}: {problem}")
        records.append(convert_gsm8k_record(raw, lineno, split))  # ids name the line, as for every file
    return records


def load_gsm8k(source: str, split: str) -> list[dict]:
    """Load a GSM8K split from a directory holding {split}.jsonl, a .jsonl file, or a hub id."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / f"{split}.jsonl"
        if not path.is_file():
            raise InputError(f"{path}: no such file (expected {split}.jsonl in {source})")
        return _read_jsonl(path, split)
    if path.is_file():
        return _read_jsonl(path, split)
    if source.endswith(".jsonl") or source.startswith((".", "/", "~")):
        raise InputError(f"{source}: no such file or directory")
    try:
        import datasets
    except ImportError:
        raise InputError(f"{source}: not a local path, and the 'datasets' package needed "
                         "to load it from the hub is not installed") from None
    rows = datasets.load_dataset(source, "main", split=split)
    records = []
    for lineno, raw in enumerate(rows, 1):
        if (problem := _problem(raw)) is not None:
            raise InputError(f"{source}[{split}]:{lineno}: {problem}")
        records.append(convert_gsm8k_record(raw, lineno, split))
    return records
