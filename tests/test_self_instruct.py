"""Self-Instruct (seed 004 step 1): M_{t-1} writes iteration t's prompts.

The near-duplicate rule (ROUGE-L) and the usability checks on hand-made cases, the ifeval instructions
attached to a model-written request (the ifeval reward checks them), bad seed files through the CLI
(exit 2, one line naming the file, nothing written), the samples stage reading the written prompts, the
Make dependency, and a small run of the stage with the real embedded model whose marker counts add up.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
from argparse import Namespace
from pathlib import Path

import pytest

from selftrain.config import load_config
from selftrain.errors import InputError
from selftrain.self_instruct import (REASONS, NearDuplicates, attach_instructions, bare_request, extract_request,
                                     filter_requests, lcs_length, rouge_l, usability_problem, words)
from tests.test_cli_errors import error_line, run_script, write_config

REPO = Path(__file__).resolve().parents[1]
CONFIG = {"method": "self_rewarding", "task": {"name": "ifeval", "n_train": 8, "n_test": 4},
          "reward_config": {"type": "rule_based", "rule_type": "ifeval"}, "samples_per_round": 4,
          "system_prompt": "You are a helpful assistant.",
          "self_rewarding": {"ift_prompts": 8, "eft_prompts": 2, "judge_eval_prompts": 2, "self_instruct": True}}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ---- near-duplicates ---------------------------------------------------------------------------------------

def test_rouge_l_is_the_f1_of_the_longest_common_word_subsequence():
    assert lcs_length(["a", "b", "c", "d"], ["b", "d", "a"]) == 2
    assert rouge_l(words("Describe owls."), words("describe OWLS")) == 1.0  # case and punctuation ignored
    assert rouge_l(words("Describe owls."), words("Describe cats.")) == 0.5
    # 5 of 6 words in order: 2 * 5 / 12
    assert rouge_l(words("Write a short poem about owls."), words("Write a short poem about cats.")) == pytest.approx(5 / 6)
    assert rouge_l(words("owls are birds"), words("birds are owls")) == pytest.approx(1 / 3)  # order matters
    assert rouge_l([], words("anything")) == 0.0


@pytest.mark.parametrize("text, near", [
    ("Write a short poem about cats.", True),            # 0.83: one topic word swapped
    ("Please write a short poem about dogs.", True),     # 5 words in order of 7 and 6: 10/13 = 0.77
    ("Write a poem about cats, please.", False),         # 4 of 6 and 6: 0.67
    ("Describe cats.", False),                           # 0.5
    ("Explain to a child why owls hunt at night.", False),
    ("write a short poem about owls", True),             # a copy
])
def test_near_duplicate_above_0_7_against_the_pool(text, near):
    pool = NearDuplicates()
    for i, seed in enumerate(["Write a short poem about owls.", "Describe owls.", "Give advice about chess."]):
        pool.add(words(seed), f"s{i}")
    assert (pool.closest(words(text)) is not None) is near


def test_the_word_index_finds_what_comparing_every_pair_finds():
    rng = random.Random(0)
    vocab = "a the owls cats write describe poem short about night river give advice why".split()
    texts = [[rng.choice(vocab) for _ in range(rng.randint(1, 9))] for _ in range(150)]
    pool = NearDuplicates()
    for i, t in enumerate(texts[:100]):
        pool.add(t, str(i))
    for t in texts[100:]:
        scores = [rouge_l(t, other) for other in texts[:100]]
        best = max(scores)
        found = pool.closest(t)
        assert (found is not None) == (best > 0.7)
        if found:
            assert found[0] == pytest.approx(best)


# ---- usability ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("response, finish, text, reason", [
    ("Write a haiku about rivers.\n6. Describe", "length", "Write a haiku about rivers.", None),
    ("  5. \"Request: Why do cats purr?\"", "stop", "Why do cats purr?", None),
    ("**Task 5:** Explain rain to a child.", "stop", "Explain rain to a child.", None),
    ("I want to learn the violin. Give me three tips.", "stop", "I want to learn the violin. Give me three tips.", None),
    ("", "stop", "", "empty"),
    ("5.  \n", "stop", "", "empty"),
    ("Write a long story about a dragon who", "length", "Write a long story about a dragon who", "cut_off"),
    ("Owls.", "stop", "Owls.", "too_short"),
    ("Write " + "very " * 150 + "much.", "stop", None, "too_long"),
    ("Draw a picture of a lighthouse.", "stop", "Draw a picture of a lighthouse.", "not_text"),
    ("Sure! Here is a new request for you.", "stop", "Sure! Here is a new request for you.", "not_a_request"),
    ("Owls hunt at night and sleep by day.", "stop", "Owls hunt at night and sleep by day.", "not_a_request"),
    ("- 123 ways to cook rice", "stop", "123 ways to cook rice", "not_a_request"),
])
def test_usability_checks(response, finish, text, reason):
    request, ended = extract_request(response, finish)
    if text is not None:
        assert request == text
    assert usability_problem(request, ended) == reason


def written(i: int, response: str, shots: list[str], finish: str = "stop") -> dict:
    return {"id": f"si02-{i:06d}", "shots": shots, "shot_ids": [f"s-{s[:4]}" for s in shots],
            "response": response, "finish_reason": finish}


def test_filter_keeps_or_drops_each_request_once_and_counts_add_up():
    from selftrain.tasks.instructions import TYPES

    pool = [{"id": f"seed-{i}", "request": r} for i, r in enumerate(
        ["Describe owls.", "Write a short poem about rainy days.", "Give advice about chess.", "Why do people enjoy baking?"])]
    shots = ["Describe owls.", "Give advice about chess."]
    rows = [
        written(0, "Explain volcanoes to a child.\n", shots),            # kept
        written(1, "Give advice about chess!\n", shots),                 # its own shot
        written(2, "Write a short poem about rainy days.", shots),       # a seed it was not shown
        written(3, "Explain volcanoes to a child, please.", shots),      # near the first kept one
        written(4, "Write a story about a dragon who", shots, "length"),
        written(5, "Sure, here you go.", shots),
        written(6, "List three reasons to learn a language.", shots),   # kept
        written(7, "Tell me about the ocean.", shots),                   # its prompt is a held-out prompt
    ]
    probe = attach_instructions("Tell me about the ocean.", TYPES[2],  # the third kept prompt's first type
                                random.Random("0:self_instruct:attach:2:si02-000007"))
    kept, metrics = filter_requests(rows, pool, seed=0, iteration=2, attach=True,
                                    held_out={" ".join(probe["prompt"].lower().split())})
    assert [k["id"] for k in kept] == ["si02-000000", "si02-000006"]
    assert metrics["dropped"] == {**{r: 0 for r in REASONS}, "copy_of_shot": 1, "duplicate_of_seed": 1,
                                  "duplicate": 1, "cut_off": 1, "not_a_request": 1, "held_out": 1}
    assert metrics["kept"] + metrics["dropped_total"] == len(rows)
    # the first instruction type cycles over the kept prompts as the task generator balances a split
    assert [k["metadata"]["instruction_id_list"][0] for k in kept] == ["length_constraints:number_words",
                                                                         "change_case:english_lowercase"]
    assert kept[0]["prompt"].startswith("Explain volcanoes to a child. ")
    assert kept[0]["metadata"]["request"] == "Explain volcanoes to a child."
    assert kept[0]["dataset"] == "self_instruct" and kept[0]["metadata"]["shot_ids"] == rows[0]["shot_ids"]


# ---- the ifeval instructions ------------------------------------------------------------------------------

def test_a_model_written_request_gets_instructions_the_ifeval_reward_checks():
    from selftrain.ifeval_checks import validate_instructions
    from selftrain.rewards.ifeval import IFEvalReward
    from selftrain.self_rewarding import truth_score
    from selftrain.tasks.instructions import FORBIDDEN, LOWER, TYPES, description

    request = "Write a cheerful letter to my neighbour about her vegetable garden."
    for n, first in enumerate(TYPES):
        record = attach_instructions(request, first, random.Random(n))
        ids, kwargs = record["metadata"]["instruction_id_list"], record["metadata"]["kwargs"]
        assert ids[0] == first and validate_instructions(ids, kwargs) is None
        expected = request  # IFEval's own texts, joined as the generator joins them
        for i, k in zip(ids, kwargs):
            expected += ("\n" if "\n" in expected else " ") + description(i, k)
        assert record["prompt"] == expected
        for i, k in zip(ids, kwargs):
            if i == FORBIDDEN:  # never a word the request itself uses
                assert not set(k["forbidden_words"]) & set(words(request))
    record = attach_instructions(request, LOWER, random.Random(1))
    assert record["metadata"]["instruction_id_list"][0] == LOWER
    replies = {"follows": "dear ana, your tomatoes look wonderful this summer.",
               "breaks": "Dear Ana, your tomatoes look wonderful this summer."}
    scored = {name: IFEvalReward().score([{**record, "id": name, "response": reply, "finish_reason": "stop"}])[0]
              for name, reply in replies.items()}
    assert scored["follows"]["ifeval_strict"][0] is True and scored["breaks"]["ifeval_strict"][0] is False
    judged = {**record, "id": "x", "response": replies["follows"], "finish_reason": "stop", **scored["follows"]}
    assert 0 <= truth_score(judged) <= 5  # the judge's truth score applies as to the pool's prompts


def test_the_built_in_seed_requests_are_the_ift_prompts_without_their_instructions():
    from selftrain.data import load_task_split
    from selftrain.self_instruct import seed_pool
    from selftrain.tasks.instructions import SHAPES, TOPICS

    config = load_config(None, CONFIG)
    bare = {shape.format(topic=topic) for shape in SHAPES for topic, _ in TOPICS}
    pool = seed_pool(config)
    assert len(pool) == 8 and all(seed["request"] in bare for seed in pool)
    assert [s["id"] for s in pool] == [r["id"] for r in load_task_split(config, "ift")]
    assert bare_request({"prompt": "Say hi.", "metadata": {}}) == "Say hi."  # another source: as it is


# ---- bad input through the CLI -----------------------------------------------------------------------------

@pytest.mark.parametrize("lines, message", [
    ([], "{path}: file is empty (no prompts to show as examples)"),
    (["", "   "], "{path}: file is empty (no prompts to show as examples)"),
    ([{"prompt": "Describe owls."}, {"text": "Describe cats."}], "{path}:2: prompt: missing"),
    ([{"prompt": "Describe owls."}, {"prompt": "  "}], "{path}:2: prompt: expected a non-empty string"),
    ([{"prompt": "Describe owls."}, "not json"], "{path}:2: not valid JSON"),
])
def test_bad_seed_file_stops_with_one_line_and_writes_nothing(tmp_path, lines, message):
    seeds = write_jsonl(tmp_path / "seeds.jsonl", lines)
    config = write_config(tmp_path / "c.json", CONFIG)
    out = tmp_path / "out" / "prompts.jsonl"
    line = error_line(run_script("self_instruct.py", "--config", config, "--iteration", 2, "--seed_file", seeds,
                                 "--output", out))
    assert line.startswith("error: " + message.format(path=seeds)), line
    assert not (tmp_path / "out").exists()


def test_missing_seed_file_and_too_many_shots_are_refused(tmp_path):
    missing = tmp_path / "nope.jsonl"
    config = write_config(tmp_path / "c.json", {**CONFIG, "self_rewarding": {
        **CONFIG["self_rewarding"], "self_instruct_file": str(missing)}})
    run = tmp_path / "run"
    line = error_line(run_script("self_instruct.py", "--config", config, "--run_dir", run, "--iteration", 2))
    assert line == f"error: {missing}: file not found", line
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": "Describe owls."}, {"prompt": "Describe cats."}])
    line = error_line(run_script("self_instruct.py", "--config", config, "--run_dir", run, "--iteration", 2,
                                 "--seed_file", seeds, "--shots", 3))
    assert "self_rewarding.self_instruct_shots: 3 examples per request, but the seed pool holds 2" in line, line
    assert not run.exists()


def finished_samples(run: Path, responses: list[str]) -> Path:
    """iter_02 of a run whose self_instruct_samples step has finished with these replies (no model needed)."""
    it2 = run / "iter_02"
    it2.mkdir(parents=True)
    write_jsonl(it2 / "self_instruct_samples_20250101-000000.jsonl",
                [written(i, r, ["Describe owls."]) for i, r in enumerate(responses)])
    (it2 / "self_instruct_samples.done").write_text(json.dumps({"output": "self_instruct_samples_20250101-000000.jsonl"}))
    return it2


def test_fewer_kept_than_asked_is_said_in_the_marker_and_none_kept_stops(tmp_path):
    config = write_config(tmp_path / "c.json", {**CONFIG, "self_rewarding": {
        **CONFIG["self_rewarding"], "self_instruct_prompts": 3}})
    run = tmp_path / "some"
    it2 = finished_samples(run, ["Explain volcanoes to a child.\n", "Describe owls.\n", "Owls.\n"])
    proc = run_script("self_instruct.py", "--config", config, "--run_dir", run, "--iteration", 2)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((it2 / "self_instruct.done").read_text())["metrics"]
    assert (m["requested"], m["generated"], m["kept"], m["shortfall"]) == (3, 3, 1, 2)
    assert m["dropped"]["copy_of_shot"] == m["dropped"]["too_short"] == 1 and m["dropped_total"] == 2
    assert m["note"] == "only 1 of 3 requested prompts survived the checks and de-duplication"

    run = tmp_path / "none"
    it2 = finished_samples(run, ["Describe owls.\n", "", "Owls hunt at night.\n"])
    line = error_line(run_script("self_instruct.py", "--config", config, "--run_dir", run, "--iteration", 2))
    assert "none of the 3 requests" in line, line
    assert "(dropped: empty 1, not_a_request 1, copy_of_shot 1)" in line, line
    assert not (it2 / "self_instruct.done").exists() and not list(it2.glob("self_instruct_2*"))


# ---- the samples stage takes the written prompts -----------------------------------------------------------

def test_samples_take_the_written_prompts_when_self_instruct_is_on(tmp_path):
    from selftrain.data import load_train_prompts
    from selftrain.stages.create_data import round_prompts

    run, it2 = tmp_path / "run", tmp_path / "run" / "iter_02"
    args = Namespace(run_dir=str(run), iteration=2)
    config = load_config(None, CONFIG)
    with pytest.raises(InputError, match="run the 'self_instruct' stage of iteration 2 first"):
        round_prompts(args, config)
    it2.mkdir(parents=True)
    record = attach_instructions("Explain volcanoes to a child.", "punctuation:no_comma", random.Random(0))
    write_jsonl(it2 / "self_instruct_20250101-000000.jsonl", [{"id": "si02-000000", "dataset": "self_instruct", **record}])
    (it2 / "self_instruct.done").write_text(json.dumps({"output": "self_instruct_20250101-000000.jsonl"}))
    (prompt,) = round_prompts(args, config)
    assert prompt["id"] == "si02-000000" and prompt["prompt"] == record["prompt"]
    off = load_config(None, {**CONFIG, "self_rewarding": {**CONFIG["self_rewarding"], "self_instruct": False}})
    assert round_prompts(args, off) == load_train_prompts(off, 2)
    assert round_prompts(Namespace(run_dir=str(run), iteration=1), config) == load_train_prompts(config, 1)


@pytest.mark.parametrize("enabled", [True, False])
def test_make_runs_self_instruct_before_the_samples_of_iteration_2_only_when_enabled(tmp_path, enabled):
    config = write_config(tmp_path / "c.json", {**CONFIG, "self_rewarding": {
        **CONFIG["self_rewarding"], "self_instruct": enabled}})
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    proc = subprocess.run(["make", "-n", "--no-print-directory", "METHOD=self_rewarding", f"CONFIG={config}", "RUN=r",
                           f"RESULTS={tmp_path}", f"{tmp_path}/r/iter_02/samples.done"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    commands = [line for line in proc.stdout.splitlines() if ".py " in line]
    writes = [i for i, c in enumerate(commands) if "self_instruct.py" in c]
    samples = next(i for i, c in enumerate(commands) if "create_data.py" in c)
    if enabled:
        (at,) = writes
        assert "--iteration 2" in commands[at] and commands[at - 1].split()[1] == "train.py" and at < samples
    else:
        assert writes == []


# ---- a small run with the real embedded model --------------------------------------------------------------

@pytest.mark.slow
def test_the_stage_writes_usable_prompts_with_the_embedded_model_and_counts_add_up(tmp_path):
    from selftrain.rewards.ifeval import IFEvalReward

    config = write_config(tmp_path / "c.json", {**CONFIG, "max_new_tokens": 32, "temperature": 0.7, "top_p": 0.9,
                                                "self_rewarding": {**CONFIG["self_rewarding"], "self_instruct_shots": 3,
                                                                   "self_instruct_prompts": 8}})
    run = tmp_path / "run"
    args = ("self_instruct.py", "--config", config, "--run_dir", run, "--iteration", 2, "--model_name", "smollm2-135m")
    proc = run_script(*args, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    it2 = run / "iter_02"
    samples_marker = json.loads((it2 / "self_instruct_samples.done").read_text())
    marker = json.loads((it2 / "self_instruct.done").read_text())
    written = [json.loads(line) for line in (it2 / samples_marker["output"]).read_text().splitlines()]
    kept = [json.loads(line) for line in (it2 / marker["output"]).read_text().splitlines()]
    m = marker["metrics"]
    assert [w["id"] for w in written] == [f"si02-{i:06d}" for i in range(8)]
    assert all(len(w["shots"]) == 3 and w["generator"] == "smollm2-135m" for w in written)
    assert m["requested"] == m["generated"] == samples_marker["metrics"]["generated"] == 8
    assert m["kept"] == len(kept) >= 1 and m["kept"] + sum(m["dropped"].values()) == m["generated"]
    assert set(m["dropped"]) == set(REASONS) and m["shortfall"] == 8 - len(kept)
    assert ("note" in m) == (len(kept) < 8)
    assert {k["id"] for k in kept} <= {w["id"] for w in written}
    for record in kept:
        assert record["prompt"].startswith(record["metadata"]["request"])
        scored = IFEvalReward().score([{**record, "response": "a reply.", "finish_reason": "stop"}])[0]
        assert len(scored["ifeval_strict"]) == len(record["metadata"]["instruction_id_list"])
    # a rerun does nothing; without the final marker it filters again from the replies on disk, sending nothing
    before = (it2 / marker["output"]).read_bytes()
    assert "nothing to do" in run_script(*args).stderr
    (it2 / "self_instruct.done").unlink()
    again = run_script(*args)
    assert again.returncode == 0 and "self-instruct: kept" in again.stderr and "requests, " not in again.stderr
    assert (it2 / json.loads((it2 / "self_instruct.done").read_text())["output"]).read_bytes() == before
