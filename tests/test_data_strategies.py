"""Dataset selection strategies of seed 000: which prompts each round takes, exactly.

Datasets are small JSONL files written by the tests; ids tell where a prompt
came from ("E3" = easy file, line 3), so the assertions name the chosen prompts.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from selftrain.config import load_config
from selftrain.data import load_eval_prompts, load_train_prompts, read_prompt_file
from selftrain.errors import InputError


def dataset(tmp_path: Path, name: str, prefix: str, n: int, difficulty: str | None = None) -> str:
    path = tmp_path / f"{name}.jsonl"
    rows = []
    for i in range(n):
        row = {"id": f"{prefix}{i}", "prompt": f"{prefix} question {i}", "metadata": {"expected_answer": str(i)}}
        if difficulty:
            row["difficulty"] = difficulty
        rows.append(json.dumps(row))
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def ids(records: list[dict]) -> list[str]:
    return [r["id"] for r in records]


@pytest.fixture
def two_levels(tmp_path):
    return [{"path": dataset(tmp_path, "easy", "E", 6), "name": "Easy", "difficulty": "easy"},
            {"path": dataset(tmp_path, "hard", "H", 4), "name": "Hard", "difficulty": "hard"}]


def config(datasets, **extra):
    return load_config(None, {"datasets": datasets, "eval_holdout": 0, "test_file": "", **extra})


# --- sequential ------------------------------------------------------------------------------------

def test_sequential_takes_everything_in_order_and_tags_the_source(two_levels):
    records = load_train_prompts(config(two_levels), 1)
    assert ids(records) == ["E0", "E1", "E2", "E3", "E4", "E5", "H0", "H1", "H2", "H3"]
    assert [r["dataset"] for r in records] == ["Easy"] * 6 + ["Hard"] * 4
    assert [r["difficulty"] for r in records] == ["easy"] * 6 + ["hard"] * 4


def test_sequential_windows_wrap_around(two_levels):
    c = config(two_levels, samples_per_round=4)
    assert ids(load_train_prompts(c, 1)) == ["E0", "E1", "E2", "E3"]
    assert ids(load_train_prompts(c, 2)) == ["E4", "E5", "H0", "H1"]
    assert ids(load_train_prompts(c, 3)) == ["H2", "H3", "E0", "E1"]


def test_record_difficulty_wins_over_the_dataset_default(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"id": "a", "prompt": "q", "difficulty": "expert", "metadata": {"expected_answer": "1"}}\n'
                    '{"id": "b", "prompt": "q", "metadata": {"expected_answer": "1"}}\n')
    records = load_train_prompts(config([{"path": str(path), "difficulty": "medium"}]), 1)
    assert [(r["id"], r["difficulty"], r["dataset"]) for r in records] == [("a", "expert", "mixed"),
                                                                             ("b", "medium", "mixed")]


def test_files_with_the_same_name_get_distinct_ids(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a, b = dataset(tmp_path / "x", "train", "X", 2), dataset(tmp_path / "y", "train", "Y", 2)
    for folder in (tmp_path / "x", tmp_path / "y"):  # drop the ids: they come from file name and line
        path = folder / "train.jsonl"
        path.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "id"}) + "\n"
                                for line in path.read_text().splitlines()))
    records = load_train_prompts(config([{"path": a}, {"path": str(tmp_path / "y")}]), 1)
    assert ids(records) == ["0-train-000001", "0-train-000002", "1-train-000001", "1-train-000002"]


def test_ids_must_be_unique_across_datasets(tmp_path):
    a, b = dataset(tmp_path, "a", "X", 2), dataset(tmp_path, "b", "X", 2)
    with pytest.raises(InputError, match="id 'X0' is also in .*a.jsonl"):
        load_train_prompts(config([{"path": a}, {"path": b}]), 1)


# --- difficulty_curriculum ----------------------------------------------------------------------

def test_curriculum_follows_the_progression_and_repeats_the_last_level(two_levels):
    c = config(two_levels, dataset_selection_strategy="difficulty_curriculum",
               difficulty_progression=["easy", "hard"])
    assert ids(load_train_prompts(c, 1)) == ["E0", "E1", "E2", "E3", "E4", "E5"]
    assert ids(load_train_prompts(c, 2)) == ["H0", "H1", "H2", "H3"]
    assert ids(load_train_prompts(c, 5)) == ["H0", "H1", "H2", "H3"]  # past the list: its last level


def test_curriculum_repeated_level_takes_the_next_window(two_levels):
    c = config(two_levels, dataset_selection_strategy="difficulty_curriculum", samples_per_round=4,
               difficulty_progression=["easy", "easy", "hard"])
    assert ids(load_train_prompts(c, 1)) == ["E0", "E1", "E2", "E3"]
    assert ids(load_train_prompts(c, 2)) == ["E4", "E5", "E0", "E1"]
    assert ids(load_train_prompts(c, 3)) == ["H0", "H1", "H2", "H3"]


def test_curriculum_without_progression_spreads_present_levels_over_the_rounds(two_levels):
    # the seed-000 complete example: difficulty_curriculum, no progression, 10 rounds, easy + hard data
    c = config(two_levels, dataset_selection_strategy="difficulty_curriculum",
               enable_difficulty_curriculum=True, num_rounds=10)
    levels = [{r["difficulty"] for r in load_train_prompts(c, n)} for n in range(1, 11)]
    assert levels == [{"easy"}] * 5 + [{"hard"}] * 5


def test_curriculum_level_without_prompts_is_an_error_before_round_1(two_levels):
    c = config(two_levels, dataset_selection_strategy="difficulty_curriculum", num_rounds=3,
               difficulty_progression=["easy", "medium", "hard"])
    with pytest.raises(InputError, match="round 2 takes level 'medium', but no prompt has it"):
        load_train_prompts(c, 1)


def test_curriculum_needs_a_difficulty_on_every_prompt(tmp_path):
    c = config([{"path": dataset(tmp_path, "plain", "P", 3)}], dataset_selection_strategy="difficulty_curriculum")
    with pytest.raises(InputError, match="3 prompts have no difficulty .*'P0'"):
        load_train_prompts(c, 1)


# --- round_robin ---------------------------------------------------------------------------------

def test_round_robin_alternates_datasets_and_advances_each(tmp_path, two_levels):
    third = {"path": dataset(tmp_path, "code", "C", 3), "name": "Code"}
    c = config(two_levels + [third], dataset_selection_strategy="round_robin", samples_per_round=2)
    rounds = [ids(load_train_prompts(c, n)) for n in range(1, 7)]
    assert rounds == [["E0", "E1"], ["H0", "H1"], ["C0", "C1"], ["E2", "E3"], ["H2", "H3"], ["C2", "C0"]]


# --- random_weighted -----------------------------------------------------------------------------

def test_random_weighted_is_seeded_reproducible_and_follows_the_weights(tmp_path):
    sets = [{"path": dataset(tmp_path, "a", "A", 400), "weight": 3.0},
            {"path": dataset(tmp_path, "b", "B", 400), "weight": 1.0}]
    c = config(sets, dataset_selection_strategy="random_weighted", samples_per_round=200, seed=7)
    first = load_train_prompts(c, 1)
    assert ids(first) == ids(load_train_prompts(c, 1))  # same config, same prompts
    share = Counter(r["id"][0] for r in first)
    assert 130 <= share["A"] <= 170 and share["A"] + share["B"] == 200  # 3:1 -> ~150 of 200
    assert len(set(ids(first))) == 200  # no repeats before a dataset is used up
    second = load_train_prompts(c, 2)
    assert not set(ids(first)) & set(ids(second))  # round 2 continues each dataset where round 1 stopped
    other_seed = load_train_prompts(config(sets, dataset_selection_strategy="random_weighted",
                                           samples_per_round=200, seed=8), 1)
    assert ids(other_seed) != ids(first)


def test_random_weighted_reshuffles_after_a_dataset_is_used_up(tmp_path):
    c = config([{"path": dataset(tmp_path, "a", "A", 3)}], dataset_selection_strategy="random_weighted",
               samples_per_round=2)
    rounds = [ids(load_train_prompts(c, n)) for n in (1, 2, 3)]
    assert all(len(set(r)) == 2 for r in rounds)  # never twice in a round
    assert Counter(sum(rounds, [])) == {"A0": 2, "A1": 2, "A2": 2}  # two passes over the shuffled dataset


def test_random_weighted_never_repeats_a_prompt_within_a_round(tmp_path):
    sets = [{"path": dataset(tmp_path, "a", "A", 10), "weight": 3.0},
            {"path": dataset(tmp_path, "b", "B", 10), "weight": 1.0}]
    for per_round in (0, 20, 50):  # 0: as many as there are prompts; more than that is capped
        chosen = ids(load_train_prompts(config(sets, dataset_selection_strategy="random_weighted",
                                               samples_per_round=per_round), 1))
        assert sorted(chosen) == sorted([f"A{i}" for i in range(10)] + [f"B{i}" for i in range(10)])


# --- evaluation hold-out --------------------------------------------------------------------------

def test_eval_holdout_is_disjoint_from_training_and_reproducible(two_levels):
    c = load_config(None, {"datasets": two_levels, "eval_holdout": 0.25, "seed": 3})
    held = ids(load_eval_prompts(c, "test"))
    assert len(held) == 2 + 1  # round(6 * 0.25) easy + round(4 * 0.25) hard
    assert {h[0] for h in held} == {"E", "H"}
    trained = ids(load_train_prompts(c, 1))
    assert not set(held) & set(trained) and len(trained) == 10 - 3
    assert held == ids(load_eval_prompts(c, "test"))


def test_eval_holdout_does_not_move_with_the_sampling_seed(two_levels):
    held = [ids(load_eval_prompts(load_config(None, {"datasets": two_levels, "seed": seed}), "test"))
            for seed in (0, 1)]
    assert held[0] == held[1]


def test_eval_holdout_interleaves_datasets_so_a_cap_covers_all(two_levels):
    c = load_config(None, {"datasets": two_levels, "eval_holdout": 0.5, "eval_max_samples": 2})
    assert [r["dataset"] for r in load_eval_prompts(c, "test")] == ["Easy", "Hard"]


def test_no_evaluation_prompts_is_an_error(tmp_path):
    c = load_config(None, {"datasets": [{"path": dataset(tmp_path, "one", "O", 1)}]})
    with pytest.raises(InputError, match="no evaluation prompts"):
        load_eval_prompts(c, "test")


def test_test_file_replaces_the_holdout(tmp_path, two_levels):
    test_file = dataset(tmp_path, "test", "T", 2)
    c = load_config(None, {"datasets": two_levels, "test_file": test_file})
    assert ids(load_eval_prompts(c, "test")) == ["T0", "T1"]
    assert len(load_train_prompts(c, 1)) == 10  # nothing held out


def test_code_tasks_need_no_expected_answer(tmp_path):
    path = tmp_path / "code.jsonl"
    path.write_text(json.dumps({"prompt": "Write f", "metadata": {"test_cases": [
        {"input": "print(f())", "expected_output": "1"}]}}) + "\n")
    c = config([{"path": str(path)}], **{"reward_config.rule_type": "code"})
    assert len(load_train_prompts(c, 1)) == 1
    with pytest.raises(InputError, match="code.jsonl:1: metadata.expected_answer: missing"):
        load_train_prompts(config([{"path": str(path)}]), 1)  # math scoring needs it


@pytest.mark.parametrize("reward, missing", [({"reward_config.rule_type": "code"}, "test_cases"),
                                             ({"reward_config.rule_type": "regex"}, "regex_pattern")])
def test_what_a_reward_needs_is_checked_before_generation(tmp_path, reward, missing):
    path = dataset(tmp_path, "plain", "P", 2)
    with pytest.raises(InputError, match=f"plain.jsonl:1: metadata.{missing}: missing"):
        load_train_prompts(config([{"path": path}], **reward), 1)
    load_train_prompts(config([{"path": path}], **{"reward_config.rule_type": "regex",
                                                   "reward_config.regex_pattern": "x"}), 1)


# --- source formats: a local file holds seed-000 records or GSM8K's own lines -----------------------

def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_gsm8k_lines_are_converted(tmp_path):
    path = write_jsonl(tmp_path / "gsm.jsonl", [
        {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
        {"question": "Big?", "answer": "1000 + 234 = 1234\n#### 1,234"},
        {"id": "own", "prompt": "And 1 + 1?", "metadata": {"expected_answer": 2}},  # formats may mix
    ])
    records = read_prompt_file(path, required=("expected_answer",))
    assert records[0]["prompt"] == "Tom has 3 apples and buys 4. How many?"
    assert records[0]["metadata"]["expected_answer"] == "7"
    assert records[0]["metadata"]["reference_rationale"] == "3 + 4 = 7"
    assert records[1]["metadata"]["expected_answer"] == "1234"
    assert [r["id"] for r in records] == ["gsm8k-gsm-000001", "gsm8k-gsm-000002", "own"]
    assert records[2]["metadata"]["expected_answer"] == "2"
    c = config([{"path": str(path)}])
    assert ids(load_train_prompts(c, 1)) == ["gsm8k-gsm-000001", "gsm8k-gsm-000002", "own"]


def test_bad_gsm8k_line_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "q?", "answer": "#### 1"},
                                                {"question": "q?", "answer": "so #### "}])
    with pytest.raises(InputError, match=rf"^{path}:2: answer: nothing after '####'$"):
        read_prompt_file(path)


def test_nan_expected_answer_stops_loading_at_its_line(tmp_path):
    path = write_jsonl(tmp_path / "nan.jsonl", [{"prompt": "q1", "metadata": {"expected_answer": 1}},
                                                '{"prompt": "q2", "metadata": {"expected_answer": NaN}}'])
    with pytest.raises(InputError, match=rf"^{path}:2: metadata.expected_answer: expected a string or a finite "
                                         r"number, got nan$"):
        load_train_prompts(config([{"path": str(path)}]), 1)
