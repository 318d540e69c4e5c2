"""End to end: `make rounds` with `method: iterative_dpo` on configs/iterative_dpo_tiny.yaml, the real embedded
model. M0's evaluation, then two rounds of samples (M_{t-1}'s candidates) -> judged (IFEval's rule checks) ->
pairs (best vs worst reward per prompt) -> model (DPO from M_{t-1}, reference M_{t-1}) -> eval. A second
`make rounds` runs no stage and touches no file.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.test_e2e import needs_setup, read_jsonl, snapshot

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/iterative_dpo_tiny.yaml"
STAGES = ("samples", "judged", "pairs", "model", "eval")
SCRIPTS = ("create_data.py", "judge.py", "pairs.py", "train_dpo.py", "evaluate.py")
PROMPTS, CANDIDATES, TEST = 16, 4, 4  # the tiny config's samples_per_round, num_generations_per_prompt, n_test


def make_rounds(results: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    proc = subprocess.run(["make", "rounds", f"CONFIG={CONFIG}", "RUN=idpo", f"RESULTS={results}"], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
    assert proc.returncode == 0, f"make rounds failed:\n{proc.stdout[-6000:]}"
    return proc.stdout


def check_round(run_dir: Path, n: int) -> None:
    it = run_dir / f"iter_{n:02d}"
    assert {p.name for p in it.glob("*.done")} == {f"{s}.done" for s in STAGES}
    marker = {s: json.loads((it / f"{s}.done").read_text()) for s in STAGES}
    previous = "smollm2-135m" if n == 1 else str(run_dir / f"iter_{n - 1:02d}" / "model")
    assert marker["samples"]["model"] == previous  # M_{t-1} writes the candidates ...
    assert marker["model"]["init_model"] == previous  # ... and is the DPO's start and reference

    judged = {r["id"]: r for r in read_jsonl(it / marker["judged"]["output"])}
    assert len(judged) == PROMPTS * CANDIDATES
    pairs = read_jsonl(it / marker["pairs"]["output"])
    m = marker["pairs"]["metrics"]
    assert len(pairs) == m["pairs"] == m["paired"] >= 1
    assert m["prompts"] == PROMPTS and m["candidates"] == PROMPTS * CANDIDATES
    assert m["paired"] + m["tie"] + m["too_few_scored"] + m["no_untruncated_top"] == PROMPTS
    assert m["tie_rate"] == round(m["tie"] / PROMPTS, 4)
    for key in ("candidate_accuracy", "pair_precision", "chosen_longer_rate"):
        assert 0 <= m[key] <= 1, key
    assert m["mean_chosen_chars"] > 0 and m["mean_rejected_chars"] >= 0
    for pair in pairs:
        chosen, rejected = judged[pair["chosen_id"]], judged[pair["rejected_id"]]
        assert pair["score_chosen"] == chosen["reward_score"] > rejected["reward_score"] == pair["score_rejected"]
        assert chosen["finish_reason"] != "length"  # a cut-off reply is never chosen
        assert chosen["prompt_id"] == rejected["prompt_id"] == pair["id"]
        assert pair["prompt"] == chosen["prompt_text"]
        assert (pair["chosen"], pair["rejected"]) == (chosen["response"], rejected["response"])
        assert pair["chosen"].strip() != pair["rejected"].strip()
        assert 0 <= pair["true_rejected"] <= 5 and 0 <= pair["true_chosen"] <= 5
    assert marker["model"]["metrics"]["pairs"] == len(pairs)
    for name in ("config.json", "model.safetensors", "adapter/adapter_config.json", "selftrain_config.json"):
        assert (it / "model" / name).is_file(), name


@pytest.mark.slow
def test_make_rounds_iterative_dpo(tmp_path):
    needs_setup()
    make_rounds(tmp_path)
    run_dir = tmp_path / "idpo"
    assert {p.name for p in (run_dir / "iter_00").glob("*.done")} == {"eval.done"}
    for n in (1, 2):
        check_round(run_dir, n)
    for n in (0, 1, 2):
        it = run_dir / f"iter_{n:02d}"
        result = json.loads((it / json.loads((it / "eval.done").read_text())["output"]).read_text())
        assert result["n"] == TEST and 0 <= result["prompt_level_strict"] <= result["instruction_level_loose"] + 1e-9

    before = snapshot(run_dir)
    again = make_rounds(tmp_path)
    assert not any(script in again for script in SCRIPTS), again
    assert snapshot(run_dir) == before
