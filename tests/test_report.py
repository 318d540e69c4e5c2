"""make report on hand-written stage markers: the progress table, the round-metrics table, the plot."""
from __future__ import annotations

import json

import pytest

from selftrain import report


def marker(directory, stage, metrics):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stage}.done").write_text(json.dumps({"output": f"{stage}.jsonl", "metrics": metrics}))


JUDGED = {"samples": 8, "mean_reward": 0.25, "median_reward": 0.0, "mean_response_chars": 120.5, "distinct_2": 0.61,
          "duplicate_rate": 0.125, "no_answer_rate": 0.25, "per_difficulty": {"easy": {"mean_reward": 0.5},
                                                                               "hard": {"mean_reward": 0.0}}}


def test_report_shows_accuracy_and_round_metrics(tmp_path, capsys):
    run = tmp_path / "run"
    marker(run / "iter_00", "eval", {"accuracy": 0.1, "mean_reward": 0.1, "per_difficulty": {"easy": {"accuracy": 0.1}}})
    marker(run / "iter_01", "judged", {**JUDGED, "solve_rate": 0.5})
    marker(run / "iter_01", "train", {"train_examples": 3, "kept_percent": 25.0, "balance_by": "answer",
                                      "kept_per_answer": {"yes": 1, "no": 1}, "kept_per_difficulty": {"easy": 2}})
    marker(run / "iter_01", "model", {"train_loss": 0.5, "loss_history": [0.7, 0.3]})
    marker(run / "iter_01", "eval", {"accuracy": 0.35, "mean_reward": 0.35, "per_difficulty": {"easy": {"accuracy": 0.35}}})
    report.main([str(run)])
    table = (run / "report.md").read_text()
    assert "| 1 | 8 | 50.0% | 3 | 0.5 | 35.0% | 0.35 | easy 35% |" in table  # no column for what no stage has
    assert "rationalized" not in table
    # mean, median, per group, kept, kept %, the balancing class, chars, distinct-2, duplicates, no answer
    assert "| 1 | 0.25 | 0.0 | easy 0.50, hard 0.00 | 3 | 25.0 | yes 1, no 1 | 120.5 | 0.61 | 12.5% | 25.0% |" in table
    assert (run / "report.png").stat().st_size > 10_000
    assert table.splitlines()[2] in capsys.readouterr().out


def test_report_for_a_score_only_reward_shows_the_mean_reward(tmp_path):
    run = tmp_path / "run"
    marker(run / "iter_01", "judged", JUDGED)
    marker(run / "iter_01", "eval", {"accuracy": None, "mean_reward": 2.75,
                                     "per_difficulty": {"easy": {"n": 2, "mean_reward": 2.75, "median_reward": 2.75}}})
    report.main([str(run)])
    table = (run / "report.md").read_text()
    assert "| iter | samples | eval reward | per difficulty |" in table  # no accuracy column: nothing decides it
    assert "| 1 | 8 | 2.75 | easy 2.75 |" in table


def test_report_of_an_empty_folder_is_an_input_error(tmp_path):
    from selftrain.errors import InputError

    with pytest.raises(InputError, match="no finished stages"):
        report.main([str(tmp_path)])


def test_report_shows_whatever_stages_a_run_has(tmp_path):
    """No hard-coded stage list: an Expert Iteration run (no rationales) and a stage of a future method."""
    run = tmp_path / "run"
    for stage, seconds, at in (("samples", 120, "01"), ("judged", 6, "02"), ("pairs", 30, "03"), ("eval", 60, "04")):
        marker(run / "iter_01", stage, {"wall_seconds": seconds, "samples": 8,
                                         **({"backend": {"backend": "openai"}} if stage == "samples" else {})})
        data = json.loads((run / "iter_01" / f"{stage}.done").read_text())
        (run / "iter_01" / f"{stage}.done").write_text(json.dumps({**data, "finished_at": f"2026-12-01T00:00:{at}"}))
    report.main([str(run)])
    table = (run / "report.md").read_text()
    assert "| iter | samples | judged | pairs | eval |" in table
    assert "| 1 | 2.0 (openai) | 0.1 | 0.5 | 1.0 |" in table
    assert "rationalized" not in table
