"""Rewards behind one interface, one module per type (seed 000's `reward_config`).

A reward is built from the run's Config and scores a list of records:

    reward = get_reward(config)
    results = reward.score(records)   # one dict per record, same order

Each record carries `id`, `prompt_id`, `prompt` or `messages`, `prompt_text` (the
exact rendered prompt), `response`, `metadata` and maybe `difficulty`. Each
result has at least:

    reward_score  float
    is_correct    bool for verifiable rewards (rule_based), None otherwise
    answer_found  bool: the reply held something to score (a number, a program,
                  JSON); False is reported apart from "wrong"

plus type-specific fields (`predicted`, `tests_passed`, `reward_error`, ...).
A reward class may offer `summarize(scored records) -> dict`: summary figures of its own
that evaluate.py adds (IFEval's four accuracies). `reward.verifiable` says whether `is_correct` is meaningful (the `correct`
filter and rationalization need it). A reward class may also have
`check_record(record) -> str | None`, what makes a record unscorable (e.g.
"metadata.expected_answer: missing"); the judge asks it for every sample before
it writes anything, so bad input stops the stage at its file and line. No reward ever falls back to a default
or random score: a failure is an exception (InputError for bad input or an
unreachable service), never a made-up number.
"""
from __future__ import annotations

import importlib

from selftrain.config import Config
from selftrain.errors import InputError

# (type, rule_type or None) -> "module:Class"
REGISTRY = {
    ("rule_based", "math"): "selftrain.rewards.math:MathReward",
    ("rule_based", "code"): "selftrain.rewards.code:CodeReward",
    ("rule_based", "json"): "selftrain.rewards.json_format:JsonReward",
    ("rule_based", "regex"): "selftrain.rewards.regex:RegexReward",
    ("rule_based", "ifeval"): "selftrain.rewards.ifeval:IFEvalReward",
    ("rule_based", "yesno"): "selftrain.rewards.yesno:YesNoReward",
    ("local", None): "selftrain.rewards.local:LocalReward",
    ("api", None): "selftrain.rewards.api:ApiReward",
    ("script", None): "selftrain.rewards.script:ScriptReward",
}


def question_of(record: dict) -> str:
    """The question a response answers, for score-only rewards (reward model, API, script).

    The record's `prompt`, else its last user message, else the rendered
    `prompt_text`: a scorer judges the question as the dataset states it, not
    this run's chat template, system prompt and few-shot examples.
    """
    if isinstance(record.get("prompt"), str):
        return record["prompt"]
    users = [m.get("content") for m in record.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    if users and isinstance(users[-1], str):
        return users[-1]
    if isinstance(record.get("prompt_text"), str):
        return record["prompt_text"]
    raise InputError(f"record {record.get('id')}: prompt: missing (scoring needs 'prompt', 'messages' or 'prompt_text')")


def reward_class(config: Config):
    rc = config.reward_config
    key = (rc.type, rc.rule_type if rc.type == "rule_based" else None)
    if key not in REGISTRY:
        raise InputError(f"reward_config: type {rc.type!r} / rule_type {rc.rule_type!r} is not a known reward")
    module, name = REGISTRY[key].split(":")
    return getattr(importlib.import_module(module), name)


def is_verifiable(config: Config) -> bool:
    """Whether the configured reward decides correctness: the rule-based ones do (each class says so too)."""
    return config.reward_config.type == "rule_based"


def get_reward(config: Config):
    return reward_class(config)(config)
