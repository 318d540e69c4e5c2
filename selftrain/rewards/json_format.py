"""Rule-based JSON reward: the reply must hold valid JSON, optionally matching a JSON schema.

Where the JSON is looked for, in order (nothing else is searched, so a `{...}`
in the middle of prose never counts):

1. the whole reply, stripped of surrounding whitespace;
2. else one fenced block: the first block opened by a line "```json", or if
   there is none, the first opened by a bare "```" line; it ends at the next
   line that is exactly "```". An unclosed fence (a reply cut off at
   max_new_tokens) is not a block.

JSON is strict RFC 8259: any value (an object, an array, a number, ...) counts,
NaN and Infinity do not. To require an object, give the schema {"type": "object"}.

The schema is `metadata.json_schema` of the record if present, else
`reward_config.json_schema` (empty: no schema). Its `$schema` picks the draft
(default 2020-12); "format" is not asserted (the JSON Schema default) and
remote `$ref`s are never fetched (an unresolvable one is an InputError).

Result: reward_score and is_correct 1.0/True when the JSON parsed and
validated, answer_found when some JSON parsed, and `reward_error`, a short
reason or None ("not JSON: Expecting value at line 1 column 1",
"schema: 'age' is a required property").
"""
from __future__ import annotations

import json

from selftrain.errors import InputError

MAX_ERROR_CHARS = 300  # a schema error quotes the offending value; keep the reason short


class JsonReward:
    name = "rule_based/json"
    verifiable = True

    def __init__(self, config):
        self.config = config
        self._validators: dict[str, object] = {}  # canonical schema text -> checked validator
        schema = config.reward_config.json_schema
        self.default_validator = self._validator(schema, "reward_config.json_schema") if schema else None

    def score(self, records: list[dict]) -> list[dict]:
        return [self._score_one(record) for record in records]

    def _score_one(self, record: dict) -> dict:
        validator, where = self._schema_for(record)
        value, error = extract_json(record["response"])
        parsed = error is None
        if parsed and validator is not None:
            error = schema_error(validator, value, where)
        correct = error is None
        return {
            "reward_score": 1.0 if correct else 0.0,
            "is_correct": correct,
            "answer_found": parsed,
            "reward_error": error,
        }

    def _schema_for(self, record: dict):
        """(validator or None, where the schema came from): the record's schema wins over the config's."""
        metadata = record.get("metadata") or {}
        if "json_schema" in metadata:
            where = f"record {record.get('id')}: metadata.json_schema"
            return self._validator(metadata["json_schema"], where), where
        return self.default_validator, "reward_config.json_schema"

    def _validator(self, schema, where: str):
        """Check a schema (once per distinct schema) and build its validator; its `$schema` picks the draft."""
        from jsonschema import SchemaError
        from jsonschema.validators import validator_for

        if not isinstance(schema, (dict, bool)):
            raise InputError(f"{where}: expected a JSON schema (an object), got {type(schema).__name__}")
        key = json.dumps(schema, sort_keys=True)
        if key not in self._validators:
            cls = validator_for(schema)
            try:
                cls.check_schema(schema)
            except SchemaError as exc:
                raise InputError(f"{where}: invalid JSON schema: {_short(exc.message)} (at {exc.json_path})") from None
            self._validators[key] = cls(schema)
        return self._validators[key]


def schema_error(validator, value, where: str) -> str | None:
    """The most relevant validation error as "schema: [path: ]message", or None when `value` is valid."""
    from jsonschema.exceptions import best_match
    from referencing.exceptions import Unresolvable

    try:
        error = best_match(validator.iter_errors(value))
    except Unresolvable as exc:
        raise InputError(f"{where}: cannot resolve a $ref ({exc}); remote references are not fetched") from None
    if error is None:
        return None
    at = "" if error.json_path == "$" else f"{error.json_path}: "
    return _short(f"schema: {at}{error.message}")


def extract_json(response: str) -> tuple[object, str | None]:
    """(value, None) for the reply's JSON, or (None, reason) when none parses (rules: module doc).

    The value may itself be None (the JSON `null`): check the reason, not the value.
    """
    text = response.strip()
    if not text:
        return None, "not JSON: empty reply"
    value, error = _parse(text)
    if error is None:
        return value, None
    block = fenced_block(response)
    if block is None:
        return None, f"not JSON: {error}"
    label, content = block
    value, block_error = _parse(content)
    if block_error is None:
        return value, None
    return None, f"not JSON (the {label} block): {block_error}"


def fenced_block(response: str) -> tuple[str, str] | None:
    """(label, content) of the first ```json block, else of the first bare ``` block; None if neither."""
    blocks: list[tuple[str, str]] = []
    opening, lines = None, []
    for line in response.split("\n"):
        stripped = line.strip()
        if opening is None:
            if stripped.startswith("```"):
                opening, lines = stripped[3:].strip().lower(), []
        elif stripped == "```":
            blocks.append((opening, "\n".join(lines)))
            opening = None
        else:
            lines.append(line)
    for wanted, label in (("json", "```json"), ("", "```")):
        for info, content in blocks:
            if info == wanted:
                return label, content
    return None


def _parse(text: str) -> tuple[object, str | None]:
    try:
        return json.loads(text, parse_constant=_reject_constant), None
    except json.JSONDecodeError as exc:
        return None, f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except ValueError as exc:  # NaN/Infinity, or an integer too long to convert
        return None, _short(str(exc))
    except RecursionError:
        return None, "nested too deeply"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."
