"""End to end: the seed-000 "Complete Configuration Example", unchanged but for its paths.

The JSON block is read from the seed document itself (skipped with a reason
when ../shared is not beside the repository); `base_model_path` points at the
embedded model and the two dataset paths at small local files. `make rounds
ROUNDS=2` runs the baseline and two rounds with the real model, then `make
report` must show the round metrics.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path

import pytest

from selftrain.tasks.arithmetic import generate_split

REPO = Path(__file__).resolve().parents[1]
SEEDS = REPO.parent / "shared" / "seeds"
N_EASY, N_HARD = 8, 4


def seed_example() -> dict:
    docs = sorted(SEEDS.glob("000_*.txt"))
    if not docs:
        pytest.skip(f"seed 000 not found under {SEEDS}")
    text = docs[0].read_text()
    section = text[text.index("## Complete Configuration Example"):]
    return json.loads(re.search(r"```json\n(.*?)\n```", section, re.S).group(1))


def write_prompts(path: Path, level: str, n: int) -> None:
    rows, _ = generate_split(n, 1, [level], seed=5)
    # no id (ids come from file and line) and no difficulty (the dataset entry gives it)
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("id", "difficulty")}) + "\n"
                            for r in rows))


def make(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    proc = subprocess.run(["make", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"make {' '.join(args)} failed\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_seed000_complete_example_runs_two_rounds(tmp_path):
    installed = REPO / ".venv" / ".installed"
    if not installed.is_file() or installed.stat().st_mtime < (REPO / "requirements.txt").stat().st_mtime:
        pytest.skip("make setup has not been run (make would install the environment)")
    config = seed_example()
    assert config["dataset_selection_strategy"] == "difficulty_curriculum" and config["filter_strategy"] == "top_k_percent"
    write_prompts(tmp_path / "easy_math.jsonl", "easy", N_EASY)
    write_prompts(tmp_path / "hard_math.jsonl", "hard", N_HARD)
    config["base_model_path"] = "smollm2-135m"
    for ds in config["datasets"]:
        ds["path"] = str(tmp_path / Path(ds["path"]).name)  # /data/easy_math.jsonl -> tmp/easy_math.jsonl
    config_path = tmp_path / "seed000.json"
    config_path.write_text(json.dumps(config, indent=2))

    common = [f"CONFIG={config_path}", "RUN=seed000", f"RESULTS={tmp_path}"]
    make("rounds", "ROUNDS=2", *common)
    run_dir = tmp_path / "seed000"
    assert sorted(p.name for p in run_dir.iterdir()) == ["iter_00", "iter_01", "iter_02"]

    held_out = json.loads(next((run_dir / "iter_00").glob("eval_*.json")).read_text())
    held_ids = {r["id"] for r in held_out["results"]}
    assert len(held_ids) == 2  # eval_holdout 10%: one easy and one hard prompt, never trained on
    for n in (1, 2):
        it = run_dir / f"iter_{n:02d}"
        markers = {s: json.loads((it / f"{s}.done").read_text()) for s in
                   ("samples", "judged", "rationales", "train", "model", "eval")}
        samples = read_jsonl(it / markers["samples"]["output"])
        # difficulty_curriculum without a progression: 10 rounds over [easy, hard] -> rounds 1-5 are easy
        assert {r["difficulty"] for r in samples} == {"easy"} and {r["dataset"] for r in samples} == {"Easy Math"}
        assert len(samples) == (N_EASY - 1) * config["num_generations_per_prompt"]
        assert not held_ids & {r["prompt_id"] for r in samples}
        judged = read_jsonl(it / markers["judged"]["output"])
        train_rows = read_jsonl(it / markers["train"]["output"])
        chosen = [r for r in train_rows if r["source"] == "sample"]
        # top_k_percent 20: never more than 20% of the samples, and only from the top of the ranking
        assert len(chosen) <= math.ceil(0.2 * len(judged))
        worst_kept = min((r["reward_score"] for r in chosen), default=1.0)
        assert worst_kept >= sorted((r["reward_score"] for r in judged), reverse=True)[math.ceil(0.2 * len(judged)) - 1]
        trained = markers["model"]["config"]
        assert (trained["learning_rate"], trained["training_method"], trained["num_train_epochs"]) == (1e-5, "lora", 1.0)
        metrics = markers["judged"]["metrics"]
        for key in ("mean_reward", "median_reward", "distinct_2", "duplicate_rate", "no_answer_rate",
                    "mean_response_chars"):
            assert key in metrics, key
        assert markers["samples"]["metrics"]["round"]["per_dataset"] == {"Easy Math": N_EASY - 1}
        result = json.loads((it / markers["eval"]["output"]).read_text())
        assert {r["id"] for r in result["results"]} == held_ids

    report = make("report", *common).stdout
    assert "Round metrics" in report and "distinct-2" in report
    assert (run_dir / "report.png").stat().st_size > 10_000
    rows = [line for line in (run_dir / "report.md").read_text().splitlines() if re.match(r"\| [12] \| \d", line)]
    assert len(rows) == 6  # iterations 1 and 2 in all three tables (progress, round metrics, stages)
