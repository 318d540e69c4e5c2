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
from selftrain.prompts import PromptSpec, encode_example
from selftrain.rewards import is_verifiable
from selftrain.tracking import check_available


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
    if config.self_rewarding.judge_template:
        load_template(config.self_rewarding.judge_template)  # a missing file or placeholder, before any work
    g = config.generation
    if config.method == "self_rewarding" and config.self_rewarding.judge_scoring == "expected" \
            and g.backend == "openai" and g.api == "chat":
        raise InputError(f"{where}: self_rewarding.judge_scoring: expected reads the score tokens' log-probabilities "
                         f"after the judge's \"Score: \", inside its reply: it needs generation.api: completions "
                         f"(a server with the judge's weights), not chat")
    check_available(config, where)  # report_to: transformers' integration and the tracker's package
    if config.training_method == "qlora":
        from selftrain.models import check_4bit  # imports torch: only when QLoRA asks for it

        check_4bit(where)


def student_tokens(config: Config, tokenizer, text: str) -> int:
    """Tokens the student generates to write `text` as its reply: the text as training encodes it with the
    student's tokenizer (`tokenizer`) and prompt spec, and the end-of-turn token (prompts.encode_example)."""
    labels = encode_example(tokenizer, "", text, PromptSpec.from_config(config))["labels"]
    return sum(label != -100 for label in labels)


def check_targets_fit(config: Config, tokenizer, targets: list[tuple[int, str]], path) -> list[int]:
    """Each target's `student_tokens`; refuses targets the student's evaluation would cut off.

    `targets` are (line in `path` of the record it is made from, text) of replies the student may be
    trained on (distillation: the targets built from the teacher's replies). A limit on the teacher's side
    (`distill.teacher_max_tokens`) counts the teacher's own tokens, so it says nothing about this: every
    target, as the student's tokenizer counts it with its end-of-turn token, must fit in `max_new_tokens`,
    or the evaluation stops the student before its final assessment."""
    counts = [student_tokens(config, tokenizer, text) for _, text in targets]
    over = [(line, n) for (line, _), n in zip(targets, counts) if n > config.max_new_tokens]
    if over:
        line, n = over[0]
        longest = max(n for _, n in over)
        raise InputError(f"{path}:{line}: max_new_tokens: {config.max_new_tokens} is below the {n} tokens of the "
                         f"target made from this line, as the student's tokenizer counts them with its end-of-turn "
                         f"token ({len(over)} of {len(targets)} targets are longer, the longest {longest}): evaluation "
                         f"would cut them off before their final assessment; set max_new_tokens >= {longest}")
    return counts
