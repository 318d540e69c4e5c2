"""The one stage contract (runs.open_stage): inputs in a run and by hand, output names, refusals."""
from __future__ import annotations

from argparse import Namespace

import pytest

from selftrain.errors import InputError
from selftrain.runs import open_stage


def args(**kw) -> Namespace:
    return Namespace(**{"run_dir": None, "iteration": 1, "input": None, "output": None, **kw})


def test_by_hand_the_output_sits_beside_the_input(tmp_path):
    source = tmp_path / "x.samples.jsonl"
    source.write_text("{}\n")
    stage = open_stage(args(input=str(source)), "judged", inputs=("samples",))
    assert stage.path == tmp_path / "x.judged.jsonl" and stage.inputs == {"samples": source}
    assert stage.output.marker is None and not stage.done()


def test_by_hand_optional_siblings_are_used_when_present(tmp_path):
    judged = tmp_path / "x.judged.jsonl"
    judged.write_text("{}\n")
    stage = open_stage(args(input=str(judged)), "train", inputs=("judged",), optional=("rationales",), hand_output="")
    assert stage.path == tmp_path / "x.jsonl" and "rationales" not in stage.inputs
    (tmp_path / "x.rationales.jsonl").write_text("")
    stage = open_stage(args(input=str(judged)), "train", inputs=("judged",), optional=("rationales",), hand_output="")
    assert stage.inputs["rationales"] == tmp_path / "x.rationales.jsonl"


def test_an_output_that_would_overwrite_an_input_is_refused(tmp_path):
    judged = tmp_path / "x.jsonl"  # not named x.judged.jsonl: the training set would take its name
    judged.write_text("{}\n")
    with pytest.raises(InputError, match="would overwrite this judged input"):
        open_stage(args(input=str(judged)), "train", inputs=("judged",), hand_output="")


def test_in_a_run_a_missing_input_stage_is_a_clear_error_and_optional_ones_are_skipped(tmp_path):
    with pytest.raises(InputError, match=r"judged\.done: missing: run the 'judged' stage of iteration 1"):
        open_stage(args(run_dir=str(tmp_path)), "train", inputs=("judged",))
    stage = open_stage(args(run_dir=str(tmp_path)), "eval", optional=("train",), suffix=".json")
    assert stage.inputs == {} and stage.output.marker == tmp_path / "iter_01" / "eval.done"
    assert stage.path.parent == tmp_path / "iter_01" and stage.path.name.startswith("eval_")


def test_without_input_or_run_a_stage_says_what_to_give():
    with pytest.raises(InputError, match="give --input"):
        open_stage(args(), "judged", inputs=("samples",))
    with pytest.raises(InputError, match="give --output"):
        open_stage(args(), "pairs")


def test_expert_iteration_never_trains_on_rationales(tmp_path):
    from selftrain.stages.select import main

    judged = tmp_path / "x.judged.jsonl"
    judged.write_text('{"id": "p#0", "prompt_id": "p", "prompt_text": "Q", "response": "A", "is_correct": true, '
                      '"reward_score": 1.0, "finish_reason": "stop", "metadata": {"expected_answer": "1"}}\n')
    (tmp_path / "x.rationales.jsonl").write_text(
        '{"id": "q#r0", "prompt_id": "q", "prompt_text": "Q2", "response": "B", "is_correct": true, '
        '"leaked_hint": false, "reward_score": 1.0, "finish_reason": "stop", "metadata": {"expected_answer": "2"}}\n')
    main(["--input", str(judged), "--set", "method=expert_iteration"])
    assert [line.count('"id"') for line in (tmp_path / "x.jsonl").read_text().splitlines()] == [1]
    assert '"q#r0"' not in (tmp_path / "x.jsonl").read_text()
    main(["--input", str(judged), "--output", str(tmp_path / "star.jsonl")])  # STaR takes the rationale
    assert '"q#r0"' in (tmp_path / "star.jsonl").read_text()
