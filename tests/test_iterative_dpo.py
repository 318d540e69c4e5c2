"""method: iterative_dpo without a model: pairs from judged records (stages/reward_pairs.py, pairs.py's
dispatch), the no-pairs stop, the config section, the demo config beside Self-Rewarding's, the plan
`make -n rounds` makes, and the side-by-side report."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from selftrain.checks import check_runnable
from selftrain.config import Config, load_config
from selftrain.data import load_eval_prompts, load_train_prompts
from selftrain.errors import InputError
from selftrain.generation.jobs import stage_seed
from selftrain.report import compare_runs
from selftrain.stages.reward_pairs import make_reward_pairs, reward_groups
from tests.test_e2e import needs_setup, read_jsonl

REPO = Path(__file__).resolve().parents[1]
IFEVAL = {"type": "rule_based", "rule_type": "ifeval"}


def candidate(prompt: str, j: int, response: str, score, finish: str = "stop", **extra) -> dict:
    return {"id": f"{prompt}#{j}", "prompt_id": prompt, "prompt_text": f"<user> {prompt}", "prompt": prompt,
            "response": response, "reward_score": score, "is_correct": score == 1.0, "finish_reason": finish,
            **extra}


def write_judged(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "round.judged.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def pairs_of(tmp_path: Path, records: list[dict], config: Config | None = None) -> tuple[list[dict], dict]:
    config = config or Config(method="iterative_dpo")
    out = tmp_path / "round.pairs.jsonl"
    metrics = make_reward_pairs(config, write_judged(tmp_path, records), out)
    return read_jsonl(out), metrics


# --- pairs from rewards --------------------------------------------------------------------------------

def test_best_and_worst_reward_per_prompt_ties_dropped_and_counted(tmp_path):
    records = [candidate("p1", 0, "a", 0.5), candidate("p1", 1, "b", 0.5), candidate("p1", 2, "c", 0.5),
               candidate("p2", 0, "low", 0.0), candidate("p2", 1, "high", 1.0), candidate("p2", 2, "mid", 0.5)]
    pairs, metrics = pairs_of(tmp_path, records)
    assert [(p["id"], p["chosen"], p["rejected"]) for p in pairs] == [("p2", "high", "low")]
    assert (pairs[0]["chosen_id"], pairs[0]["rejected_id"]) == ("p2#1", "p2#0")
    assert (pairs[0]["score_chosen"], pairs[0]["score_rejected"]) == (1.0, 0.0)
    assert pairs[0]["prompt"] == "<user> p2" and pairs[0]["prompt_id"] == "p2"  # the exact prompt_text
    assert pairs[0]["prompt_spec"]["system_prompt"] == Config().system_prompt
    assert "true_chosen" not in pairs[0]  # no truth without the ifeval reward
    assert {k: metrics[k] for k in ("prompts", "paired", "tie", "too_few_scored", "no_untruncated_top", "pairs",
                                    "candidates", "distinct_candidates")} == {
        "prompts": 2, "paired": 1, "tie": 1, "too_few_scored": 0, "no_untruncated_top": 0, "pairs": 1,
        "candidates": 6, "distinct_candidates": 6}
    assert metrics["tie_rate"] == 0.5
    assert metrics["candidate_accuracy"] == round(1 / 6, 4)
    assert (metrics["mean_chosen_chars"], metrics["mean_rejected_chars"]) == (4, 3)
    assert "pair_precision" not in metrics


def test_a_cut_off_reply_is_never_chosen_but_may_be_rejected(tmp_path):
    records = [candidate("p1", 0, "best but cut", 1.0, "length"), candidate("p1", 1, "good", 0.5),
               candidate("p1", 2, "bad", 0.0),
               candidate("p2", 0, "only the cut one is good", 1.0, "length"), candidate("p2", 1, "bad", 0.0),
               candidate("p3", 0, "good", 1.0), candidate("p3", 1, "bad and cut", 0.0, "length")]
    pairs, metrics = pairs_of(tmp_path, records)
    assert [(p["id"], p["chosen"], p["rejected"]) for p in pairs] == [("p1", "good", "bad"),
                                                                      ("p3", "good", "bad and cut")]
    assert metrics["no_untruncated_top"] == 1 and metrics["truncated_candidates"] == 3


def test_length_control_prefers_short_near_the_top_and_long_near_the_bottom(tmp_path):
    records = [candidate("p", 0, "top and long " * 5, 1.0), candidate("p", 1, "near top", 0.9),
               candidate("p", 2, "worst", 0.0), candidate("p", 3, "near the bottom, long " * 5, 0.1)]
    (plain,), _ = pairs_of(tmp_path, records)
    assert (plain["chosen_id"], plain["rejected_id"]) == ("p#0", "p#2")
    config = load_config(overrides={"method": "iterative_dpo", "iterative_dpo.length_control": 0.5})
    (controlled,), metrics = pairs_of(tmp_path, records, config)
    assert (controlled["chosen_id"], controlled["rejected_id"]) == ("p#1", "p#3")
    assert metrics["chosen_longer_rate"] == 0.0


def test_identical_replies_of_a_prompt_are_one_candidate(tmp_path):
    records = [candidate("p1", 0, "same", 1.0), candidate("p1", 1, " same\n", 1.0), candidate("p1", 2, "other", 0.0),
               candidate("p2", 0, "echo", 1.0), candidate("p2", 1, "echo", 1.0)]
    groups = reward_groups(records)
    assert [(c["id"], c["copies"], c["mean_score"]) for c in groups["p1"]] == [("p1#0", 2, 1.0), ("p1#2", 1, 0.0)]
    pairs, metrics = pairs_of(tmp_path, records)
    assert [(p["chosen_id"], p["rejected_id"]) for p in pairs] == [("p1#0", "p1#2")]
    assert metrics["candidates"] == 5 and metrics["distinct_candidates"] == 3
    assert metrics["too_few_scored"] == 1  # p2: one distinct reply, nothing to prefer


def test_unscored_candidates_are_left_out_and_counted(tmp_path):
    records = [candidate("p", 0, "a", None), candidate("p", 1, "b", 0.2), candidate("p", 2, "c", 0.7)]
    (pair,), metrics = pairs_of(tmp_path, records)
    assert (pair["chosen_id"], pair["rejected_id"]) == ("p#2", "p#1")
    assert metrics["unscored_candidates"] == 1


def ifeval_candidate(prompt: str, j: int, response: str, strict: list[bool], finish: str = "stop") -> dict:
    return candidate(prompt, j, response, sum(strict) / len(strict), finish, ifeval_strict=strict,
                     metadata={"topic": "tea", "instruction_id_list": ["x"] * len(strict), "kwargs": [{}] * len(strict)})


def test_ifeval_pairs_carry_the_rule_checked_truth_and_its_precision(tmp_path):
    records = [ifeval_candidate("p1", 0, "green tea is calm", [True, True]),   # truth 1 + 1 + 3 = 5
               ifeval_candidate("p1", 1, "green tea rocks", [True, False]),    # 1 + 1 + 1 = 3
               ifeval_candidate("p1", 2, "coffee", [False, False]),            # 1 + 0 + 0 = 1
               ifeval_candidate("p2", 0, "tea time", [True]),                  # 5
               ifeval_candidate("p2", 1, "", [False])]                         # 0 (empty)
    config = load_config(overrides={"method": "iterative_dpo", "reward_config": IFEVAL})
    pairs, metrics = pairs_of(tmp_path, records, config)
    assert [(p["chosen_id"], p["rejected_id"], p["true_chosen"], p["true_rejected"]) for p in pairs] == [
        ("p1#0", "p1#2", 5, 1), ("p2#0", "p2#1", 5, 0)]
    assert metrics["pair_precision"] == 1.0
    assert metrics["pair_precision_split"]["right"] == 2
    assert 0 <= metrics["pair_precision_chance"]["precision"] <= 1
    assert sum(metrics["true_score_histogram"].values()) == 5


# --- the no-pairs stop ---------------------------------------------------------------------------------

def test_no_pair_in_the_round_stops_naming_the_file_and_writes_nothing(tmp_path):
    records = [candidate(p, j, f"{p} reply {j}", 1.0) for p in ("p1", "p2") for j in range(3)]
    out = tmp_path / "round.pairs.jsonl"
    with pytest.raises(InputError) as info:
        make_reward_pairs(Config(method="iterative_dpo"), write_judged(tmp_path, records), out)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'round.judged.jsonl'}: no preference pairs: of 2 prompts, 2 tied")
    assert "reward_config" in message and "\n" not in message
    assert not out.exists()


def run_pairs_cli(tmp_path: Path, judged: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "pairs.py", "--input", str(judged), "--output", str(tmp_path / "out.jsonl"),
                           "--set", "method=iterative_dpo", *extra], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_pairs_cli_no_pairs_exits_2_with_one_line_and_no_output(tmp_path):
    judged = write_judged(tmp_path, [candidate("p", j, f"reply {j}", 0.0) for j in range(2)])
    proc = run_pairs_cli(tmp_path, judged)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {judged}: no preference pairs: of 1 prompts, 1 tied"), proc.stderr
    assert not (tmp_path / "out.jsonl").exists()
    assert not list(tmp_path.glob("out*"))  # no sidecar either


def test_pairs_cli_by_hand_writes_the_pairs_and_their_metrics(tmp_path):
    judged = write_judged(tmp_path, [candidate("p", 0, "bad", 0.0), candidate("p", 1, "good", 1.0)])
    proc = run_pairs_cli(tmp_path, judged)
    assert proc.returncode == 0, proc.stderr
    assert [p["chosen"] for p in read_jsonl(tmp_path / "out.jsonl")] == ["good"]
    assert json.loads((tmp_path / "out.config.json").read_text())["metrics"]["pairs"] == 1


def test_a_bad_reward_score_is_an_error_at_its_line(tmp_path):
    judged = write_judged(tmp_path, [candidate("p", 0, "a", 0.0), candidate("p", 1, "b", "high")])
    with pytest.raises(InputError, match=re.escape(f"{judged}:2: reward_score: expected a number")):
        make_reward_pairs(Config(method="iterative_dpo"), judged, tmp_path / "out.jsonl")
    unscored = {k: v for k, v in candidate("p", 0, "a", 0.0).items() if k != "reward_score"}
    judged = write_judged(tmp_path, [unscored])
    with pytest.raises(InputError, match=re.escape(f"{judged}:1: reward_score: missing (score the samples")):
        make_reward_pairs(Config(method="iterative_dpo"), judged, tmp_path / "out.jsonl")


# --- config --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    ({"iterative_dpo.length_control": 1.5}, "config: iterative_dpo.length_control: 1.5 must be in [0, 1]"),
    ({"iterative_dpo.length_control": -0.1}, "config: iterative_dpo.length_control: -0.1 must be in [0, 1]"),
    ({"iterative_dpo.rho": 0.5}, "config: unknown key 'iterative_dpo.rho'"),
    ({"round_offset": -1}, "config: round_offset: -1 must be >= 0"),
])
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(InputError) as info:
        load_config(overrides={"method": "iterative_dpo", **overrides})
    assert str(info.value).startswith(message)


def test_any_reward_type_runs_iterative_dpo():
    # the select stage's `correct` filter needs correctness; iterative_dpo selects nothing, so a score-only
    # reward (here a reward model) is fine with the default filter_strategy
    config = load_config(overrides={"method": "iterative_dpo", "reward_config.type": "local"})
    check_runnable(config)
    with pytest.raises(InputError, match="filter_strategy"):
        check_runnable(load_config(overrides={"reward_config.type": "local"}))


def test_round_offset_moves_the_prompt_window_and_the_random_streams():
    base = {"task": {"name": "ifeval", "n_train": 30, "n_test": 4}, "samples_per_round": 10}
    plain, shifted = load_config(overrides=base), load_config(overrides={**base, "round_offset": 1})
    assert load_train_prompts(shifted, 1) == load_train_prompts(plain, 2) != load_train_prompts(plain, 1)
    assert stage_seed(shifted, 1) == stage_seed(plain, 2)


def test_demo_config_stands_beside_self_rewarding():
    """configs/iterative_dpo.yaml's iteration t is Self-Rewarding's t+1 in all but the pairs: same base model (its
    M1), same prompts and random streams, same candidate, DPO and evaluation settings."""
    sr, idpo = load_config(REPO / "configs/self_rewarding.yaml"), load_config(REPO / "configs/iterative_dpo.yaml")
    assert idpo.method == "iterative_dpo" and idpo.num_rounds == 2
    assert idpo.base_model_path == "results/self_rewarding/iter_01/model"
    shared = ("task", "reward_config", "datasets", "dataset_selection_strategy", "samples_per_round", "max_samples",
              "test_file", "eval_max_samples", "seed", "k", "system_prompt", "few_shot_file", "use_chat_template",
              "num_generations_per_prompt", "temperature", "top_p", "top_k", "max_new_tokens", "batch_size",
              "eval_batch_size", "generation", "dtype", "dpo", "training_method", "lora_r", "lora_alpha",
              "lora_dropout", "lora_target_modules", "warmup_ratio", "lr_scheduler_type", "weight_decay", "optim")
    assert {k: getattr(idpo, k) for k in shared} == {k: getattr(sr, k) for k in shared}
    assert idpo.iterative_dpo.length_control == sr.self_rewarding.length_control
    for key in ("ift_prompts", "eft_prompts", "judge_eval_prompts"):  # the ifeval splits drawn before the pool
        assert getattr(idpo.self_rewarding, key) == getattr(sr.self_rewarding, key), key
    # Self-Rewarding's prompts come from the pool's windows (not written by its models: self_instruct)
    assert not getattr(sr.self_rewarding, "self_instruct", False)
    for t in (1, 2):
        assert load_train_prompts(idpo, t) == load_train_prompts(sr, t + 1)
        assert stage_seed(idpo, t) == stage_seed(sr, t + 1)
    assert load_eval_prompts(idpo, "test") == load_eval_prompts(sr, "test")


# --- the plan ------------------------------------------------------------------------------------------

def test_make_n_rounds_plans_the_iterative_dpo_chain(tmp_path):
    needs_setup()
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    proc = subprocess.run(["make", "-n", "rounds", "CONFIG=configs/iterative_dpo_tiny.yaml", "RUN=plan",
                           f"RESULTS={tmp_path}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    planned = re.findall(r"(\w+)\.py --config configs/iterative_dpo_tiny\.yaml --run_dir \S+ --iteration (\d+)"
                         r"(?: --steps (\w+))?", proc.stdout)
    chain = [("create_data", "generate"), ("judge", ""), ("pairs", ""), ("train_dpo", ""), ("evaluate", "")]
    assert planned == [("evaluate", "0", "")] + [(script, str(n), steps) for n in (1, 2) for script, steps in chain]
    assert not list(tmp_path.iterdir())  # a plan writes nothing


# --- the side-by-side report ---------------------------------------------------------------------------

def write_marker(run: Path, n: int, stage: str, metrics: dict, **extra) -> None:
    directory = run / f"iter_{n:02d}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stage}.done").write_text(json.dumps(
        {"output": f"{stage}.jsonl", "finished_at": f"2024-01-01T00:0{n}:00", "metrics": metrics, **extra}))


def test_compare_runs_aligns_the_second_loop_on_its_base_model(tmp_path):
    sr, idpo = tmp_path / "self_rewarding", tmp_path / "iterative_dpo"
    for n, strict in enumerate((0.30, 0.40, 0.41, 0.43)):
        write_marker(sr, n, "eval", {"prompt_level_strict": strict, "instruction_level_strict": strict + 0.1,
                                     "mean_response_chars": 300 - n})
        (sr / f"iter_{n:02d}" / "model").mkdir()
    for n in (2, 3):
        write_marker(sr, n, "pairs", {"pairs": 50 + n, "pair_precision": 0.375,
                                      "pair_precision_chance": {"precision": 0.36}})
    for n, strict in enumerate((0.40, 0.47, 0.52)):
        write_marker(idpo, n, "eval", {"prompt_level_strict": strict, "instruction_level_strict": strict + 0.1,
                                       "mean_response_chars": 250.4}, model=str(sr / "iter_01" / "model"))
    for n in (1, 2):
        write_marker(idpo, n, "pairs", {"pairs": 70, "pair_precision": 0.9, "pair_precision_chance": {"precision": 0.4}})
    table = compare_runs(sr, idpo)
    assert "iterative_dpo starts from self_rewarding's M1: its iteration t is the row M(t+1)" in table
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| M")}
    assert list(rows) == ["M0", "M1", "M2", "M3"]
    assert rows["M0"] == "| M0 | 30.0% | - | 40.0% | - | - | - | - | - | 300 | - |"
    assert rows["M1"] == "| M1 | 40.0% | 40.0% | 50.0% | 50.0% | - | - | - | - | 299 | 250 |"
    assert rows["M3"] == "| M3 | 43.0% | 52.0% | 53.0% | 62.0% | 53 | 70 | 37.5% (36.0%) | 90.0% (40.0%) | 297 | 250 |"
    header = table.splitlines()[2]
    assert header.startswith("| model | IFEval prompt strict, self_rewarding | IFEval prompt strict, iterative_dpo |")


def test_compare_cli_needs_two_finished_runs(tmp_path):
    from selftrain.report import main

    with pytest.raises(InputError, match="usage: python -m selftrain.report --compare RUN_A RUN_B"):
        main(["--compare", str(tmp_path)])
    with pytest.raises(InputError, match="no finished stages to compare"):
        main(["--compare", str(tmp_path / "a"), str(tmp_path / "b")])
