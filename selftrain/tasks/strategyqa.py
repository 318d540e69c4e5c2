"""Reader for StrategyQA in its own format, as in the official train.json (a JSON array) or as JSONL:

    {"qid": "b8677742616fef051f00", "question": "Do hamsters provide food for any animals?",
     "answer": true, "facts": ["Hamsters are prey animals.", ...],
     "decomposition": ["What type of animal are hamsters?", ...], "term": ..., "description": ..., "evidence": ...}

converted to a seed-000 record: `id` from `qid` (else the file and line name it),
`prompt` the question, and under `metadata` the expected answer "yes" or "no",
`category` "strategyqa" and the facts and decomposition when the row has them
(term, description and evidence are dropped). An answer that is not a JSON
boolean is an error naming the file and line, never read as yes or no.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

from selftrain.errors import InputError
from selftrain.records import iter_jsonl

_WHITESPACE = re.compile(r"\s*")


def is_strategyqa_record(raw) -> bool:
    """True for a well-formed StrategyQA row: a question and a boolean answer, not one of our own formats."""
    return (isinstance(raw, dict) and "prompt" not in raw and "messages" not in raw
            and isinstance(raw.get("question"), str) and isinstance(raw.get("answer"), bool))


def claims_strategyqa(raw) -> bool:
    """True for a row meant as StrategyQA, well-formed or not: a question without `prompt`/`messages` whose
    answer is not GSM8K's '#### <number>' text. Converting it reports what is wrong (a non-boolean answer)
    instead of letting it pass as a record without a prompt."""
    if not isinstance(raw, dict) or "prompt" in raw or "messages" in raw or "question" not in raw:
        return False
    answer = raw.get("answer")
    return not (isinstance(answer, str) and "####" in answer)


def _strings(raw: dict, field: str) -> list[str] | None:
    value = raw.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ValueError(f"{field}: expected a list of strings, got {value!r}")
    return list(value)


def convert_strategyqa_record(raw: dict, lineno: int, stem: str, *, gsm8k_too: bool = False) -> dict:
    """StrategyQA row -> seed-000 record; ValueError naming the field on a bad value.

    The id is `qid`, else `<stem>-<lineno>` (zero-padded, as records.py names lines). `gsm8k_too`: the
    caller also reads GSM8K rows (a mixed prompt file), so a text answer is also told GSM8K's shape."""
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question: expected a non-empty string, got {question!r}")
    if "answer" not in raw:
        raise ValueError("answer: missing (expected true or false)")
    if not isinstance(raw["answer"], bool):
        hint = ""
        if isinstance(raw["answer"], str) and raw["answer"].strip().lower() not in ("yes", "no", "true", "false"):
            also = "; a GSM8K answer ends in '#### <number>'" if gsm8k_too else ""
            hint = f" (a StrategyQA answer is a JSON boolean{also})"
        raise ValueError(f"answer: expected true or false, got {raw['answer']!r}{hint}")
    metadata = {"expected_answer": "yes" if raw["answer"] else "no", "category": "strategyqa"}
    for field in ("facts", "decomposition"):
        if (values := _strings(raw, field)) is not None:
            metadata[field] = values
    qid = raw.get("qid")
    if qid is not None and (not isinstance(qid, (str, int)) or isinstance(qid, bool) or qid == ""):
        raise ValueError(f"qid: expected a string, got {qid!r}")
    return {"id": str(qid) if qid is not None else f"{stem}-{lineno:06d}", "prompt": question, "metadata": metadata}


def is_json_array_file(path: str | Path) -> bool:
    """True when the file's first non-blank character is '[' (one JSON array, not JSONL)."""
    with open(path, encoding="utf-8") as handle:
        while chunk := handle.read(4096):
            if chunk.strip():
                return chunk.lstrip().startswith("[")
    return False


def iter_json_array(path: str | Path) -> Iterator[tuple[int, int, object]]:
    """(line, element number, value) for each element of a file holding one JSON array; the line is
    where the element starts, so errors name it even in a pretty-printed file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    pos = _WHITESPACE.match(text).end()
    line = 1 + text.count("\n", 0, pos)
    if not text.startswith("[", pos):
        raise InputError(f"{path}:{line}: expected a JSON array of StrategyQA records ([{{...}}, ...])")
    element = 0
    while True:
        start = _WHITESPACE.match(text, pos + 1).end()
        line += text.count("\n", pos, start)
        if element == 0 and text.startswith("]", start):
            pos = start
            break
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        element += 1
        yield line, element, value
        line += text.count("\n", start, end)
        pos = _WHITESPACE.match(text, end).end()
        line += text.count("\n", end, pos)
        if text.startswith("]", pos):
            break
        if not text.startswith(",", pos):
            raise InputError(f"{path}:{line}: not valid JSON (expected ',' or ']' after element {element})")
    if text[pos + 1:].strip():
        raise InputError(f"{path}:{line}: not valid JSON (text after the closing ']')")


def read_strategyqa_file(path: str | Path, id_prefix: str | None = None) -> list[dict]:
    """A local StrategyQA file, one JSON array or JSONL, converted; an InputError names the bad line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    stem = id_prefix or path.stem
    records = []
    if is_json_array_file(path):
        for line, element, raw in iter_json_array(path):
            try:
                records.append(convert_strategyqa_record(raw, element, stem))  # ids name the element
            except ValueError as exc:
                raise InputError(f"{path}:{line}: element {element}: {exc}") from None
    else:
        for lineno, raw in iter_jsonl(path):
            try:
                records.append(convert_strategyqa_record(raw, lineno, stem))
            except ValueError as exc:
                raise InputError(f"{path}:{lineno}: {exc}") from None
    if not records:
        raise InputError(f"{path}: file is empty (no records)")
    return records


def load_strategyqa(source: str, split: str, id_prefix: str | None = None) -> list[dict]:
    """Load a StrategyQA split from a directory holding {split}.jsonl or {split}.json, a .json/.jsonl
    file, or a hub id (through `datasets`; offline, an InputError naming the id)."""
    path = Path(source).expanduser()
    if path.is_dir():
        for name in (f"{split}.jsonl", f"{split}.json"):
            if (path / name).is_file():
                return read_strategyqa_file(path / name, id_prefix)
        raise InputError(f"{path}: no {split}.jsonl or {split}.json in {source}")
    if path.is_file():
        return read_strategyqa_file(path, id_prefix)
    if source.endswith((".json", ".jsonl")) or source.startswith((".", "/", "~")):
        raise InputError(f"{source}: no such file or directory")
    try:
        import datasets
    except ImportError:
        raise InputError(f"{source}: not a local path, and the 'datasets' package needed "
                         "to load it from the hub is not installed") from None
    try:
        rows = datasets.load_dataset(source, split=split)
    except Exception as exc:  # offline, unknown id, no such split: all one answer to the user
        raise InputError(f"{source}: cannot load split {split!r} from the Hugging Face hub "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                         f"offline, point to a local StrategyQA file instead (train.json or {split}.jsonl)") from None
    records = []
    for index, raw in enumerate(rows, 1):
        try:
            records.append(convert_strategyqa_record(raw, index, id_prefix or f"strategyqa-{split}"))
        except ValueError as exc:
            raise InputError(f"{source}[{split}]:{index}: {exc}") from None
    return records


def carve_splits(records: list[dict], sizes: dict[str, int], seed: int, source: str) -> dict[str, list[dict]]:
    """One set of questions -> disjoint test, dev and train splits of `sizes`, drawn in that order from a
    seeded shuffle (so sizing train never moves a test question)."""
    import random

    order = sorted(records, key=lambda r: r["id"])
    random.Random(f"selftrain-strategyqa-splits:{seed}").shuffle(order)
    if sum(sizes.values()) > len(order):
        raise InputError(f"{source}: {len(order)} questions, fewer than the {sum(sizes.values())} the splits need "
                         f"(task.n_test {sizes['test']} + n_dev {sizes['dev']} + n_train {sizes['train']})")
    out, start = {}, 0
    for name in ("test", "dev", "train"):
        out[name], start = order[start:start + sizes[name]], start + sizes[name]
    return out
