"""Class balance after filtering, and the round metrics (reward, hacking signals)."""
from __future__ import annotations

import pytest

from selftrain.config import Config
from selftrain.metrics import distinct_n, duplicate_rate, grouped, response_signals, reward_stats
from selftrain.stages.judge import judge_metrics
from selftrain.stages.select import select_examples


def judged(pid, idx, answer, score=1.0, response=None, category=None):
    metadata = {"expected_answer": answer, **({"category": category} if category else {})}
    return {"id": f"{pid}#{idx}", "prompt_id": pid, "prompt_text": f"Q {pid}", "finish_reason": "stop",
            "response": response or f"reply {pid} {idx}", "reward_score": score, "is_correct": score >= 1.0,
            "answer_found": True, "metadata": metadata}


# seed 003's failure in miniature: 2 "yes" prompts survive filtering, 5 "no" prompts do
SKEWED = ([judged(f"y{i}", 0, "Yes") for i in range(2)] + [judged(f"n{i}", 0, "no", score=1.0) for i in range(5)]
          + [judged("y9", 0, "yes", score=0.0)])


def test_no_balance_keeps_the_skew_and_reports_it():
    kept, stats = select_examples(Config(filter_strategy="correct"), SKEWED, [])
    assert len(kept) == 7
    assert "before_balance" not in stats


def test_downsample_balances_answer_classes_keeping_the_best():
    pool = SKEWED[:2] + [judged(f"n{i}", 0, "no", score=1.0) for i in range(5)]
    pool[3]["reward_score"] = 2.0  # n1 is the best "no"
    pool[5]["reward_score"] = 1.5  # then n3
    config = Config(filter_strategy="threshold", filter_threshold=1.0, balance_by="answer")
    kept, stats = select_examples(config, pool, [])
    assert sorted(r["id"] for r in kept) == ["n1#0", "n3#0", "y0#0", "y1#0"]
    assert stats["before_balance"] == {"no": 5, "yes": 2}  # "Yes" and "yes" are one class
    assert stats["kept_per_answer"] == {"no": 2, "yes": 2}


def test_upsample_repeats_the_minority_in_order_with_new_ids():
    config = Config(filter_strategy="correct", balance_by="answer", balance_method="upsample")
    kept, stats = select_examples(config, SKEWED, [])
    yes = [r for r in kept if r["metadata"]["expected_answer"].lower() == "yes"]
    assert stats["kept_per_answer"] == {"no": 5, "yes": 5}
    assert [r["id"] for r in yes] == ["y0#0", "y1#0", "y0#0~up1", "y1#0~up1", "y0#0~up2"]
    assert [r["response"] for r in yes][2:] == ["reply y0 0", "reply y1 0", "reply y0 0"]
    assert stats["upsampled"] == 3 and stats["train_examples"] == 10


def test_balance_by_category():
    pool = [judged("a", 0, "1", category="algebra"), judged("a", 1, "1", category="algebra"),
            judged("b", 0, "2", category="geometry")]
    kept, stats = select_examples(Config(filter_strategy="none", balance_by="category"), pool, [])
    assert sorted(r["id"] for r in kept) == ["a#0", "b#0"]
    assert stats["kept_per_category"] == {"algebra": 1, "geometry": 1}


def test_kept_percent_counts_samples_only():
    kept, stats = select_examples(Config(filter_strategy="correct"), SKEWED, [])
    assert stats["kept_percent"] == pytest.approx(100 * 7 / 8)


# --- metrics --------------------------------------------------------------------------------------

def test_distinct_2_counts_unique_word_bigrams():
    assert distinct_n(["a b c", "a b d"], 2) == round(3 / 4, 4)  # (a b) twice, (b c), (b d)
    assert distinct_n(["same same", "same same"], 2) == 0.5
    assert distinct_n(["one"], 2) is None


def test_duplicate_rate_is_per_prompt_and_ignores_case_and_spacing():
    records = [{"prompt_id": "p", "response": "A  b"}, {"prompt_id": "p", "response": "a b"},
               {"prompt_id": "q", "response": "a b"}, {"prompt_id": "p", "response": "c"}]
    assert duplicate_rate(records) == 0.25


def test_reward_stats_and_groups():
    records = [judged("a", 0, "1", 0.0, category="x"), judged("a", 1, "1", 1.0, category="x"),
               judged("b", 0, "2", 1.0, category="y")]
    records[0]["difficulty"] = records[1]["difficulty"] = "easy"
    records[2]["difficulty"] = "hard"
    assert reward_stats(records) == {"n": 3, "mean_reward": 0.6667, "median_reward": 1.0, "correct_rate": 0.6667}
    groups = grouped(records)
    assert groups["per_difficulty"]["easy"] == {"n": 2, "mean_reward": 0.5, "median_reward": 0.5,
                                                "correct_rate": 0.5}
    assert groups["per_category"]["y"]["mean_reward"] == 1.0
    assert "per_dataset" not in groups  # no record names a dataset


def test_scores_without_correctness_have_no_correct_rate():
    records = [dict(judged("a", 0, "1", 0.25), is_correct=None), dict(judged("a", 1, "1", 0.75), is_correct=None)]
    assert reward_stats(records) == {"n": 2, "mean_reward": 0.5, "median_reward": 0.5}
    metrics = judge_metrics(records)
    assert metrics["correct"] is None and "solve_rate" not in metrics and metrics["mean_reward"] == 0.5


def test_judge_metrics_report_hacking_signals():
    records = [judged("a", 0, "1", response="x y z"), judged("a", 1, "1", response="x y z"),
               dict(judged("b", 0, "2", 0.0, response="no idea"), answer_found=False)]
    records[0]["num_tokens"], records[1]["num_tokens"], records[2]["num_tokens"] = 3, 3, 2
    metrics = judge_metrics(records)
    assert metrics["duplicate_rate"] == round(1 / 3, 4)
    assert metrics["no_answer_rate"] == round(1 / 3, 4) and metrics["no_answer"] == 1
    assert metrics["mean_response_chars"] == round((5 + 5 + 7) / 3, 1)
    assert metrics["mean_response_tokens"] == round(8 / 3, 1)
    assert metrics["distinct_2"] == round(3 / 5, 4)  # (x y), (y z) twice each, (no idea)
    assert metrics["correct"] == 2 and metrics["wrong"] == 0 and metrics["solve_rate"] == 0.5
    assert response_signals(records)["truncated_rate"] == 0.0


def test_records_without_the_class_are_kept_and_not_a_class():
    pool = ([judged(f"y{i}", 0, "1", category="yes") for i in range(3)]
            + [judged(f"n{i}", 0, "1", category="no") for i in range(2)] + [judged("u0", 0, "1")])
    kept, stats = select_examples(Config(filter_strategy="none", balance_by="category"), pool, [])
    assert stats["kept_per_category"] == {"no": 2, "none": 1, "yes": 2}  # not cut to the 1 record without one
    assert "u0#0" in {r["id"] for r in kept}
