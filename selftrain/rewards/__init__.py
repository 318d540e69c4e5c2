"""Rewards behind one interface: `score(records) -> list of dicts` with at least
`reward_score` (float) and, for verifiable tasks, `is_correct` and `predicted`.

`reward_config.type` picks the implementation; only the types this version
runs are registered, the rest are refused by `Config.check_supported` before
any work starts. No reward ever falls back to a default or random score.
"""
from __future__ import annotations

from selftrain.config import Config
from selftrain.errors import InputError


def get_reward(config: Config):
    rc = config.reward_config
    if rc.type == "rule_based" and rc.rule_type == "math":
        from selftrain.rewards.math import MathReward

        return MathReward()
    raise InputError(f"reward_config: type {rc.type!r} / rule_type {rc.rule_type!r} is not available in this version")
