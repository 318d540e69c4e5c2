"""Reader for IFEval's own record schema, as in google/IFEval's jsonl:

    {"key": 1000, "prompt": "...", "instruction_id_list": ["punctuation:no_comma", ...],
     "kwargs": [{}, ...]}

converted to a seed-000 record: `id` from `key` (else the file and line name it),
the instructions and kwargs moved under `metadata` (falsy kwargs dropped, as
lm-eval does; the Hub's rows carry every key with None) and `category` set to
the first instruction's family ("punctuation"). Bad values are a ValueError
naming the field; the instructions are checked against lm-eval's checkers
(selftrain.ifeval_checks) so a bad line stops a stage before it generates.
"""
from __future__ import annotations

from selftrain.ifeval_checks import clean_kwargs, validate_instructions

IFEVAL_FIELDS = ("instruction_id_list", "kwargs")


def is_ifeval_record(obj) -> bool:
    """True for a line in IFEval's schema: a prompt with the instruction fields at top level."""
    return (isinstance(obj, dict) and "prompt" in obj and "messages" not in obj
            and any(field in obj for field in IFEVAL_FIELDS))


def convert_ifeval_record(obj: dict, lineno: int) -> dict:
    """IFEval row -> seed-000 record; ValueError naming the field on a bad value.

    `lineno` is the reader's `convert` signature: a row without `key` is named after
    its file and line by the reader itself."""
    for field in IFEVAL_FIELDS:
        if field not in obj:
            raise ValueError(f"{field}: missing (an IFEval record needs instruction_id_list and kwargs)")
    ids, kwargs = obj["instruction_id_list"], obj["kwargs"]
    if isinstance(kwargs, list) and all(isinstance(k, dict) for k in kwargs):
        kwargs = [clean_kwargs(k) for k in kwargs]
    if (problem := validate_instructions(ids, kwargs)) is not None:
        raise ValueError(problem)
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata: expected an object, got {type(metadata).__name__}")
    record = {k: v for k, v in obj.items() if k not in ("key", *IFEVAL_FIELDS)}
    if "key" in obj:
        key = obj["key"]
        if not isinstance(key, (str, int)) or isinstance(key, bool) or key == "":
            raise ValueError(f"key: expected a string or an integer, got {key!r}")
        record["id"] = str(key)
    record["metadata"] = {"category": ids[0].split(":")[0], **metadata,
                          "instruction_id_list": list(ids), "kwargs": kwargs}
    return record
