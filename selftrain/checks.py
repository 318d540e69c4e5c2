"""Checks that a valid config can run here, before any work starts.

`Config.validate` checks each value on its own and needs nothing but the config
module; these checks ask the modules that know (data, rewards, models) whether
a combination of values works, so they live above all of them. Every stage
runs them through `cli.resolve_config`.
"""
from __future__ import annotations

from selftrain.config import Config
from selftrain.data import needs_expected_answer
from selftrain.distill import TRAINED_TEACHER
from selftrain.errors import InputError
from selftrain.judging import load_template
from selftrain.rewards import is_verifiable


def check_runnable(config: Config, where: str = "config") -> None:
    """Refuse, before any work starts, combinations that cannot run here."""
    # the select stage's filter; iterative_dpo pairs by reward_score and selects nothing
    if config.method != "iterative_dpo" and config.filter_strategy == "correct" and not is_verifiable(config):
        raise InputError(
            f"{where}: filter_strategy: 'correct' keeps verified-correct samples, but reward type "
            f"{config.reward_config.type!r} gives scores, not correctness; use top_k_percent, threshold or best_of_n")
    if config.balance_by == "answer" and not needs_expected_answer(config):
        raise InputError(f"{where}: balance_by: 'answer' balances metadata.expected_answer classes, "
                         f"which only rule-based math and yesno scoring require; use category, difficulty or dataset")
    rc = config.reward_config
    if config.method == "self_rewarding" and (rc.type, rc.rule_type) != ("rule_based", "ifeval"):
        raise InputError(f"{where}: method: self_rewarding needs reward_config {{type: rule_based, rule_type: ifeval}} "
                         f"(IFT rejection sampling, EFT targets and the judge's accuracy are rule-checked)")
    if config.method == "distill":
        if (rc.type, rc.rule_type) != ("rule_based", "yesno"):
            raise InputError(f"{where}: method: distill needs reward_config {{type: rule_based, rule_type: yesno}} "
                             f"(drafts, teacher replies and the evaluation are checked against yes/no truths)")
        if not config.distill.dataset and config.task.name != "yesno":
            raise InputError(f"{where}: method: distill runs on StrategyQA (distill.dataset) or the built-in task "
                             f"yesno (task.name: yesno), not task {config.task.name!r}")
        d = config.distill
        if d.teacher_model == TRAINED_TEACHER and not d.dataset and config.task.n_dev < 1:
            raise InputError(f"{where}: distill.teacher_model: trained learns from the dev split's questions: "
                             f"set task.n_dev (it is {config.task.n_dev})")
        if config.max_new_tokens < d.teacher_max_tokens:
            raise InputError(f"{where}: max_new_tokens ({config.max_new_tokens}) is below distill.teacher_max_tokens "
                             f"({d.teacher_max_tokens}): Track B trains on replies of up to teacher_max_tokens, so "
                             f"its evaluation would cut them off before their final assessment")
    if config.self_rewarding.judge_template:
        load_template(config.self_rewarding.judge_template)  # a missing file or placeholder, before any work
    g = config.generation
    if config.method == "self_rewarding" and config.self_rewarding.judge_scoring == "expected" \
            and g.backend == "openai" and g.api == "chat":
        raise InputError(f"{where}: self_rewarding.judge_scoring: expected reads the score tokens' log-probabilities "
                         f"after the judge's \"Score: \", inside its reply: it needs generation.api: completions "
                         f"(a server with the judge's weights), not chat")
    if config.training_method == "qlora":
        from selftrain.models import check_4bit  # imports torch: only when QLoRA asks for it

        check_4bit(where)
