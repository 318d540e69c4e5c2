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


SR_EVAL = {"prompt_level_strict": 0.39, "instruction_level_strict": 0.478, "prompt_level_loose": 0.425,
           "instruction_level_loose": 0.522, "mean_response_chars": 314}


def test_self_rewarding_tables_put_each_judge_figure_beside_its_chance(tmp_path):
    run = tmp_path / "run"
    marker(run / "iter_00", "eval", SR_EVAL)
    marker(run / "iter_01", "eval", SR_EVAL)
    marker(run / "iter_01", "judge_eval", {"parse_failure_rate": 0.03, "judge": {
        "pairwise_accuracy": 0.55, "n_decided": 60, "n_pairs": 95, "judge_ties": 35, "judge_tie_rate": 0.3684,
        "pairwise_ties_half": 0.531, "exact_agreement": 0.155, "spearman": 0.26,
        "chance": {"pairwise_accuracy": 0.5, "pairwise_ties_half": 0.5, "judge_tie_rate": 0.35,
                   "exact_agreement": 0.14, "spearman": 0.21, "permutations": 200},
        "finished": {"n_candidates": 40, "pairwise_accuracy": 0.45, "n_decided": 20, "n_pairs": 22,
                     "chance": {"pairwise_accuracy": 0.51}}}})
    marker(run / "iter_02", "pairs", {
        "pairs": 53, "tie_rate": 0.05, "pair_precision": 0.358, "mean_chosen_chars": 300, "mean_rejected_chars": 320,
        "pair_precision_split": {"n_pairs": 53, "right": 19, "equal_truth": 21, "wrong": 13, "precision": 0.358,
                                 "precision_decided": 0.59375, "equal_truth_rate": 0.396},
        "pair_precision_chance": {"precision": 0.34, "precision_decided": 0.5, "equal_truth_rate": 0.4,
                                  "pairs": 52.1, "permutations": 200}})
    marker(run / "iter_02", "eval", SR_EVAL)
    report.main([str(run)])
    table = (run / "report.md").read_text()
    assert ("| judge | parse fail | pairs decided / all | acc, decided pairs (chance) | judge ties (chance) | "
            "exact (chance) | Spearman (chance) | finished replies: decided | acc (chance) |") in table
    assert ("| M1 | 3.0% | 60 / 95 | 55.0% (50.0%) | 36.8% (35.0%) | 15.5% (14.0%) | +0.26 (+0.21) | 20 | "
            "45.0% (51.0%) |") in table
    # the pairs M1 made train M2: precision over pairs whose truths differ, equal truths, over all pairs
    assert "| M2 | 39.0% | 47.8% | 42.5% | 52.2% | 314 | 53 | 5.0% | 59.4% (50.0%) | 39.6% (40.0%) | 35.8% (34.0%) | 300 / 320 |" in table
    assert "| M0 | 39.0% | 47.8% | 42.5% | 52.2% | 314 | - | - | - | - | - | - |" in table
    assert (run / "report.png").stat().st_size > 10_000


def test_self_rewarding_tables_render_markers_from_before_the_chance_levels(tmp_path):
    run = tmp_path / "run"
    marker(run / "iter_01", "eval", SR_EVAL)
    # ties counted as wrong and no chance level: the old pairwise figure is not the accuracy on decided pairs
    marker(run / "iter_01", "judge_eval", {"parse_failure_rate": 0.03, "judge": {
        "pairwise_accuracy": 0.375, "n_pairs": 96, "judge_ties": 30, "exact_agreement": 0.155, "spearman": -0.05}})
    marker(run / "iter_02", "pairs", {"pairs": 53, "tie_rate": 0.05, "pair_precision": 0.358,
                                      "mean_chosen_chars": 300, "mean_rejected_chars": 320})
    marker(run / "iter_02", "eval", SR_EVAL)
    report.main([str(run)])
    table = (run / "report.md").read_text()
    assert "| M1 | 3.0% | - | - | - | 15.5% (-) | -0.05 (-) | - | - |" in table
    assert "| M2 | 39.0% | 47.8% | 42.5% | 52.2% | 314 | 53 | 5.0% | - | - | 35.8% (-) | 300 / 320 |" in table
    assert "37.5%" not in table
