"""`report_to`: the trainers report to the named trackers, and each iteration's round metrics go to the
same trackers at step = iteration (selftrain/tracking.py, report.track_round).

TensorBoard is the tracker tested offline: its event files are read back with tensorboard's own
EventAccumulator and the values compared with the stage markers'. tensorboard is a test requirement
(requirements-test.txt, installed by `make setup-test`, which `make test` runs).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from selftrain import tracking
from selftrain.config import TRACKERS, Config, load_config
from selftrain.errors import InputError
from selftrain.prompts import PromptSpec
from selftrain.report import collect, round_scalars, track_round
from selftrain.stages import evaluate, train
from tests.test_stages import N_TEST, common, hand_training_file, write_config

TRACKER_ENV = ("TENSORBOARD_LOGGING_DIR", "WANDB_DIR", "WANDB_PROJECT", "WANDB_RUN_GROUP", "MLFLOW_EXPERIMENT_NAME")


@pytest.fixture
def clean_env(monkeypatch):
    """The environment the trackers read, unset here and restored after the test (tracking sets it)."""
    for name in TRACKER_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def points(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files in `directory`: {tag: [(step, value), ...]} by step."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # no purge: the files of one process may load in any order, and a lower step would drop the later ones
    events = EventAccumulator(str(directory), size_guidance={"scalars": 0}, purge_orphaned_data=False)
    events.Reload()
    return {tag: sorted((e.step, e.value) for e in events.Scalars(tag)) for tag in events.Tags()["scalars"]}


def rounds(run_dir: Path) -> dict[str, dict[int, float]]:
    """The round metrics of a run: {tag: {iteration: value}}, each iteration logged once."""
    out = {}
    for tag, logged in points(run_dir / "tracker" / "rounds").items():
        steps = [step for step, _ in logged]
        assert len(steps) == len(set(steps)), f"{tag}: an iteration logged twice: {steps}"
        out[tag] = dict(logged)
    return out


# --- the config key ------------------------------------------------------------------------------

def test_report_to_defaults_to_none_and_takes_a_name_or_a_list():
    assert Config().report_to == ["none"] and tracking.enabled(Config()) == []
    assert load_config(overrides={"report_to": "tensorboard"}).report_to == ["tensorboard"]
    assert load_config(overrides={"report_to": ["tensorboard", "wandb"]}).report_to == ["tensorboard", "wandb"]


@pytest.mark.parametrize("value, message", [
    ("tensorbord", "config: report_to[0]: 'tensorbord' is not one of none, tensorboard, wandb, mlflow, trackio"),
    ("all", "config: report_to[0]: 'all' is not one of"),  # transformers' "all": whatever is installed
    ("none,wandb", "config: report_to: ['none', 'wandb']: give none alone"),
    ([], "config: report_to: []: give none alone"),
])
def test_report_to_refuses_unknown_names(value, message):
    with pytest.raises(InputError) as info:
        load_config(overrides={"report_to": value})
    assert str(info.value).startswith(message)


def test_every_tracker_is_a_transformers_integration_with_a_round_writer():
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    assert set(TRACKERS) <= set(INTEGRATION_TO_CALLBACK)
    assert set(tracking.PACKAGES) == set(tracking.ROUND_WRITERS) == set(TRACKERS)


def test_a_missing_tracker_package_stops_the_stage_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # find_spec: not installed
    config_path = write_config(tmp_path / "tb.json", "no-model-needed", report_to="tensorboard")
    run_dir = tmp_path / "run"
    with pytest.raises(InputError) as info:
        train.main(common(config_path, run_dir, 1) + ["--train_file", str(tmp_path / "train.jsonl")])
    assert str(info.value) == (f"{config_path}: report_to: tensorboard needs the 'tensorboard' package, which is "
                               f"not installed: pip install tensorboard (make setup-test installs it)")
    assert not run_dir.exists()


# --- where the trainers report -------------------------------------------------------------------

def test_trainer_settings_name_the_run_and_its_iteration(tmp_path, clean_env):
    run_dir = tmp_path / "myrun"
    config = load_config(overrides={"report_to": "tensorboard"})
    settings = tracking.trainer_settings(config, run_dir / "iter_03" / "model", phase=2)
    assert settings == {"report_to": ["tensorboard"], "run_name": "myrun-iter_03-phase2", "project": "myrun"}
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(run_dir / "tracker" / "iter_03-phase2")
    assert tracking.trainer_settings(config, run_dir / "iter_03" / "model")["run_name"] == "myrun-iter_03"
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(run_dir / "tracker" / "iter_03")
    # by hand: beside the checkpoint, named after it
    assert tracking.trainer_settings(config, tmp_path / "out" / "ckpt")["run_name"] == "out-ckpt"
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "out" / "tracker" / "ckpt")
    assert "WANDB_RUN_GROUP" not in os.environ  # only the named trackers' settings


def test_trainer_settings_keep_what_the_user_set_for_wandb_and_mlflow(tmp_path, clean_env):
    clean_env.setenv("WANDB_PROJECT", "theirs")
    config = load_config(overrides={"report_to": "wandb,mlflow"})
    settings = tracking.trainer_settings(config, tmp_path / "r" / "iter_01" / "model")
    assert settings["report_to"] == ["wandb", "mlflow"] and settings["run_name"] == "r-iter_01"
    assert os.environ["WANDB_PROJECT"] == "theirs"
    assert os.environ["WANDB_RUN_GROUP"] == os.environ["MLFLOW_EXPERIMENT_NAME"] == "r"
    assert os.environ["WANDB_DIR"] == str(tmp_path / "r" / "tracker") and (tmp_path / "r" / "tracker").is_dir()
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ


def test_no_tracker_reports_nothing_and_touches_nothing(tmp_path, clean_env):
    assert tracking.trainer_settings(Config(), tmp_path / "r" / "iter_01" / "model") == {"report_to": "none"}
    track_round(Config(), tmp_path / "r", 1)
    assert not (tmp_path / "r").exists() and not any(name in os.environ for name in TRACKER_ENV)


# --- round metrics, one point per iteration ------------------------------------------------------

MARKERS = {  # iteration -> stage -> metrics, as the stages write them (a STaR run, then a DPO round)
    0: {"eval": {"accuracy": 0.25, "mean_reward": 0.25, "per_difficulty": {"easy": {"accuracy": 0.25}}}},
    1: {"judged": {"samples": 16, "solve_rate": 0.375, "mean_reward": 0.3125, "median_reward": 0.0,
                   "distinct_2": 0.61, "duplicate_rate": 0.125, "no_answer_rate": 0.0625},
        "rationales": {"kept": 3}, "train": {"train_examples": 7, "kept_percent": 43.8},
        "model": {"train_loss": 1.2345, "loss_history": [1.5, 1.0]},
        "eval": {"accuracy": 0.5, "mean_reward": 0.5, "per_difficulty": {"easy": {"accuracy": 0.5}}}},
    2: {"judged": {"samples": 16, "mean_reward": 0.5, "median_reward": 0.5},
        "pairs": {"pairs": 6, "tie_rate": 0.25, "pair_precision": 0.8333},
        "judge_eval": {"parse_failure_rate": 0.1, "judge": {"pairwise_accuracy": 0.7, "n_decided": 10, "n_pairs": 12}},
        "model": {"train_loss": 0.6931, "final_rewards_margins": 0.42},
        "eval": {"accuracy": 0.75, "mean_reward": 0.75, "per_difficulty": {"easy": {"accuracy": 0.75}}}},
}


def write_markers(run_dir: Path) -> None:
    for n, stages in MARKERS.items():
        directory = run_dir / f"iter_{n:02d}"
        directory.mkdir(parents=True)
        for i, (stage, metrics) in enumerate(stages.items()):
            (directory / f"{stage}.done").write_text(json.dumps(
                {"output": f"{stage}.jsonl", "finished_at": f"2026-01-0{n + 1}T00:00:{i:02d}", "metrics": metrics}))


def test_round_metrics_go_to_tensorboard_one_point_per_iteration(tmp_path, clean_env):
    pytest.importorskip("tensorboard")
    run_dir = tmp_path / "run"
    write_markers(run_dir)
    config = load_config(overrides={"report_to": "tensorboard"})
    for n in MARKERS:
        track_round(config, run_dir, n)
    logged = rounds(run_dir)

    def at(tag: str) -> dict[int, float]:
        return {step: pytest.approx(value, rel=1e-6) for step, value in logged[tag].items()}

    # the markers' own values, at step = iteration
    assert at("accuracy") == {n: MARKERS[n]["eval"]["accuracy"] for n in MARKERS}
    assert at("per_difficulty/easy") == {0: 0.25, 1: 0.5, 2: 0.75}
    assert at("round/mean_reward") == {1: 0.3125, 2: 0.5}
    assert at("round/kept") == {1: 7} and at("round/kept_percent") == {1: 43.8}
    assert at("rationalized") == {1: 3} and at("solve_rate") == {1: 0.375}
    assert at("train_loss") == {1: 1.2345, 2: 0.6931}
    assert at("self_rewarding/pairs") == {2: 6} and at("self_rewarding/pair_precision") == {2: 0.8333}
    assert at("self_rewarding/judge_pairwise") == {2: 0.7} and at("self_rewarding/dpo_margin") == {2: 0.42}
    # and every figure of the report's row, nothing else
    rows = {row["iter"]: round_scalars(row) for row in collect(run_dir)}
    for n, expected in rows.items():
        assert {tag: values[n] for tag, values in logged.items() if n in values} == pytest.approx(expected, rel=1e-6)
    assert "loss_history" not in " ".join(logged) and "iter" not in logged


def test_round_scalars_are_the_numbers_of_the_row():
    row = {"iter": 3, "stages": {"eval": {"minutes": 1.0}}, "loss_history": [1.0], "accuracy": 0.5, "samples": None,
           "round": {"kept": 4, "groups": {"easy": 0.25}, "classes": {}}, "flag": True, "name": "x"}
    assert round_scalars(row) == {"accuracy": 0.5, "round/kept": 4, "round/groups/easy": 0.25}


# --- a tiny run through the real stages ----------------------------------------------------------

def test_a_tiny_run_logs_training_loss_and_round_metrics_to_tensorboard(tmp_path, tiny_model_dir, tokenizer,
                                                                        clean_env):
    """Iteration 0's evaluation, iteration 1's SFT (train.py) and evaluation with `report_to: tensorboard`:
    the training's loss per step in tracker/iter_01, one point per iteration in tracker/rounds."""
    pytest.importorskip("tensorboard")
    config_path = write_config(tmp_path / "tb.json", tiny_model_dir, report_to="tensorboard")
    spec = PromptSpec.from_config(load_config(config_path))
    train_file = hand_training_file(tmp_path / "train.jsonl", tokenizer, spec)
    run_dir = tmp_path / "run"
    evaluate.main(common(config_path, run_dir, 0))
    train.main(common(config_path, run_dir, 1) + ["--train_file", str(train_file)])
    evaluate.main(common(config_path, run_dir, 1))

    model = json.loads((run_dir / "iter_01" / "model.done").read_text())["metrics"]
    loss = points(run_dir / "tracker" / "iter_01")["train/loss"]
    assert len(model["loss_history"]) >= 2
    assert [value for _, value in loss] == pytest.approx(model["loss_history"], abs=1e-4)
    assert [step for step, _ in loss] == list(range(1, model["steps"] + 1))  # logging_steps 1

    logged = rounds(run_dir)
    evals = [json.loads((run_dir / f"iter_0{n}" / "eval.done").read_text())["metrics"] for n in (0, 1)]
    assert logged["accuracy"] == {0: pytest.approx(evals[0]["accuracy"]), 1: pytest.approx(evals[1]["accuracy"])}
    assert logged["train_loss"] == {1: pytest.approx(model["train_loss"], rel=1e-6)}
    assert logged["reply_tokens"] == {n: pytest.approx(evals[n]["mean_response_tokens"], rel=1e-6) for n in (0, 1)}
    assert evals[1]["n"] == N_TEST

    # a rerun finds the markers: nothing is logged twice (rounds() asserts each iteration once)
    evaluate.main(common(config_path, run_dir, 1))
    assert rounds(run_dir)["accuracy"].keys() == {0, 1}
