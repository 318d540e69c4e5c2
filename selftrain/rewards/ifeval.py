"""Rule-based IFEval reward: does the reply follow the record's verifiable instructions?

Each record carries IFEval's schema under its metadata:

    metadata.instruction_id_list  ["punctuation:no_comma", "detectable_format:title", ...]
    metadata.kwargs               [{}, {"num_bullets": 3}, ...], one object per instruction;
                                  falsy values are dropped, as lm-eval does

Each instruction is checked by lm-eval's IFEval checkers (selftrain.ifeval_checks),
strict and loose. A record whose instructions are unknown, whose kwargs the
checker refuses or would fill in at random, or that needs nltk data this
machine lacks, is unscorable (`check_record` names why), never scored wrongly.

Result:
    reward_score         fraction of the instructions followed (strict)
    is_correct           every instruction followed (strict: IFEval's prompt-level accuracy)
    answer_found         the reply is not empty
    ifeval_strict        per instruction, followed (strict)
    ifeval_loose         per instruction, followed (loose: also without the first or last
                         line, or without `*`)
    instruction_id_list  the record's instructions, in the same order
"""
from __future__ import annotations

from selftrain.ifeval_checks import availability_problem, check_response, ifeval_accuracies, validate_instructions
from selftrain.rewards.checked import CheckedReward


def _instructions(record: dict) -> tuple[list[str], list[dict]]:
    """The record's (instruction ids, kwargs); ValueError naming the field that is wrong."""
    metadata = record.get("metadata")
    if not isinstance(metadata, dict):
        raise ValueError("metadata.instruction_id_list: missing (ifeval scoring needs it)")
    for key in ("instruction_id_list", "kwargs"):
        if key not in metadata:
            raise ValueError(f"metadata.{key}: missing (ifeval scoring needs it)")
    ids, kwargs = metadata["instruction_id_list"], metadata["kwargs"]
    problem = validate_instructions(ids, kwargs) or availability_problem(ids)
    if problem is not None:
        raise ValueError(f"metadata.{problem}")
    return ids, kwargs


class IFEvalReward(CheckedReward):
    name = "rule_based/ifeval"
    fact = staticmethod(_instructions)

    def score_one(self, record: dict, instructions: tuple[list[str], list[dict]]) -> dict:
        return self._score_one(record, *instructions)

    @staticmethod
    def summarize(rows: list[dict]) -> dict:
        """IFEval's four accuracies of scored rows (evaluate.py adds them to its summary)."""
        return ifeval_accuracies(rows)

    @staticmethod
    def _score_one(record: dict, ids: list[str], kwargs: list[dict]) -> dict:
        response = record["response"]
        prompt = record.get("prompt") if isinstance(record.get("prompt"), str) else ""
        followed = check_response(ids, kwargs, prompt, response)
        strict = followed["strict"]
        return {
            "reward_score": sum(strict) / len(strict),
            "is_correct": all(strict),
            "answer_found": bool(response.strip()),
            "ifeval_strict": strict,
            "ifeval_loose": followed["loose"],
            "instruction_id_list": list(ids),
        }
