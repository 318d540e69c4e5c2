"""The stage file contract, on the tiny random Llama (fp32, CPU, seconds).

The stage `main(argv)` functions run in-process against a run folder in
tmp_path. A random model is never right, so selection and training are fed
hand-made judged / training records instead of relying on its replies.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from selftrain.config import Config, load_config
from selftrain.errors import InputError
from selftrain.prompts import PromptSpec, render_prompt
from selftrain.stages import create_data, evaluate, train
from selftrain.stages.select import select_examples
from selftrain.tasks.arithmetic import generate_split

from checkpoints import check_lora_moved_the_weights, moved_tensors  # tests/ is on sys.path

N_TRAIN, N_TEST, N_SAMPLES, MAX_NEW = 6, 4, 2, 8


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*"))}


def write_config(path: Path, model_dir: str, **extra) -> Path:
    data = {
        "name": "stages", "base_model_path": model_dir,
        "task": {"name": "arithmetic", "n_train": N_TRAIN, "n_test": N_TEST, "difficulties": ["easy"], "seed": 0},
        "k": 1, "num_generations_per_prompt": N_SAMPLES, "max_new_tokens": MAX_NEW,
        "batch_size": 4, "eval_batch_size": 4, "num_train_epochs": 1, "train_batch_size": 2,
        "max_per_prompt": 2, **extra,
    }
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def config_path(tmp_path, tiny_model_dir) -> Path:
    return write_config(tmp_path / "tiny.json", tiny_model_dir)


def common(config_path: Path, run_dir: Path, iteration: int) -> list[str]:
    return ["--config", str(config_path), "--run_dir", str(run_dir), "--iteration", str(iteration),
            "--set", "dtype=fp32"]


def task_records(split: str) -> list[dict]:
    train_rows, test_rows = generate_split(N_TRAIN, N_TEST, ["easy"], 0)
    return train_rows if split == "train" else test_rows


# --- create_data --steps generate -------------------------------------------------------------


def test_generate_writes_samples_and_marker(tmp_path, config_path, tiny_model_dir, tokenizer):
    run_dir = tmp_path / "run"
    argv = common(config_path, run_dir, 1) + ["--steps", "generate"]
    create_data.main(argv)

    it = run_dir / "iter_01"
    marker = json.loads((it / "samples.done").read_text())
    samples_path = it / marker["output"]
    assert marker["output"].startswith("samples_") and marker["output"].endswith(".jsonl")
    assert sorted(p.name for p in it.iterdir()) == sorted(["samples.done", marker["output"]])
    assert marker["model"] == tiny_model_dir
    assert marker["metrics"]["prompts"] == N_TRAIN
    assert marker["metrics"]["samples"] == N_TRAIN * N_SAMPLES
    assert marker["metrics"]["generated"] == N_TRAIN * N_SAMPLES
    assert marker["metrics"]["skipped_existing"] == 0
    assert marker["config"]["dtype"] == "fp32"
    assert marker["config"]["max_new_tokens"] == MAX_NEW

    samples = read_jsonl(samples_path)
    prompts = task_records("train")
    expected_ids = {f"{p['id']}#{j}" for p in prompts for j in range(N_SAMPLES)}
    assert len(samples) == N_TRAIN * N_SAMPLES
    assert {s["id"] for s in samples} == expected_ids

    config = load_config(config_path, {"dtype": "fp32"})
    spec = PromptSpec.from_config(config)
    by_id = {p["id"]: p for p in prompts}
    for s in samples:
        source = by_id[s["prompt_id"]]
        assert s["id"] == f"{s['prompt_id']}#{s['sample_idx']}"
        assert s["iteration"] == 1 and s["generator"] == tiny_model_dir
        assert s["prompt"] == source["prompt"]
        assert s["metadata"]["expected_answer"] == source["metadata"]["expected_answer"]
        assert s["prompt_text"] == render_prompt(tokenizer, source, spec)
        assert "What is 23 + 45?" in s["prompt_text"]  # k=1: the first built-in example
        assert isinstance(s["response"], str)
        assert s["finish_reason"] in ("stop", "length")
        assert 0 <= s["num_tokens"] <= MAX_NEW
        if s["finish_reason"] == "length":
            assert s["num_tokens"] == MAX_NEW
        assert "prompt_ids" not in s

    # A second run with the marker present is a no-op: nothing is rewritten.
    before = snapshot(run_dir)
    create_data.main(argv)
    assert snapshot(run_dir) == before

    # Without the marker the stage resumes from its file: every record is skipped.
    content = samples_path.read_text()
    (it / "samples.done").unlink()
    create_data.main(argv)
    marker2 = json.loads((it / "samples.done").read_text())
    assert marker2["output"] == marker["output"]
    assert marker2["metrics"]["generated"] == 0
    assert marker2["metrics"]["skipped_existing"] == N_TRAIN * N_SAMPLES
    assert samples_path.read_text() == content


def test_generate_by_hand_single_step_writes_output_itself(tmp_path, config_path, tiny_model_dir):
    out = tmp_path / "by_hand" / "train.jsonl"
    create_data.main(["--config", str(config_path), "--set", "dtype=fp32", "--steps", "generate",
                      "--output", str(out), "--max_samples", "2", "--num_samples", "3"])
    rows = read_jsonl(out)
    assert sorted(r["id"] for r in rows) == sorted(f"arith-train-{i:06d}#{j}" for i in range(2) for j in range(3))
    sidecar = json.loads((out.parent / "train.config.json").read_text())
    assert sidecar["output"] == "train.jsonl"
    assert sidecar["metrics"]["samples"] == 6
    assert sidecar["config"]["num_generations_per_prompt"] == 3
    assert not (out.parent / "train.samples.jsonl").exists()


def test_iteration_2_defaults_to_previous_model(tmp_path, config_path):
    run_dir = tmp_path / "run"
    with pytest.raises(InputError) as info:
        create_data.main(common(config_path, run_dir, 2) + ["--steps", "generate"])
    assert f"model {run_dir / 'iter_01' / 'model'}:" in str(info.value)
    assert not list((run_dir / "iter_02").glob("samples*"))


# --- selection -------------------------------------------------------------------------------


def judged(pid: str, j, response: str, correct: bool, finish: str = "stop", **extra) -> dict:
    return {"id": f"{pid}#{j}", "prompt_id": pid, "sample_idx": j, "iteration": 1, "prompt": f"Q {pid}",
            "difficulty": "easy", "metadata": {"expected_answer": "5"}, "prompt_text": f"<prompt {pid}>",
            "response": response, "finish_reason": finish, "num_tokens": 5, "predicted": "5" if correct else "4",
            "is_correct": correct, "reward_score": float(correct), "answer_found": True, **extra}


def rationale(pid: str, response: str, correct: bool, leaked: bool, finish: str = "stop") -> dict:
    return judged(pid, "r0", response, correct, finish, source="rationalization", leaked_hint=leaked,
                  hint="5", hinted_prompt_text=f"<prompt {pid} + hint>")


JUDGED = [
    judged("p1", 0, "2 + 3 = 5.\nAnswer: 5", True),
    judged("p1", 1, "  2 + 3  = 5.\nANSWER: 5 ", True),     # same reply up to case and spaces
    judged("p1", 2, "2 + 3 = 4.\nAnswer: 4", False),
    judged("p1", 3, "2 + 3 is 5 so Answer: 5 and", True, finish="length"),  # cut off
    judged("p2", 0, "Answer: 5", True),
    judged("p2", 1, "It is 5.\nAnswer: 5", True),
    judged("p2", 2, "So 5.\nAnswer: 5", True),
    judged("p2", 3, "Five.\nAnswer: 5", True),
    judged("p3", 0, "Answer: 7", False),
    judged("p3", 1, "Answer: 8", False),
    judged("p4", 0, "Answer: 1", False),
    judged("p5", 0, "Answer: 2", False),
]
RATIONALES = [
    rationale("p3", "1 + 4 = 5.\nAnswer: 5", True, False),
    rationale("p4", "The hint says 5.\nAnswer: 5", True, True),   # mentions the hint: dropped
    rationale("p5", "1 + 4 = 5 and so on", True, False, finish="length"),
    rationale("p6", "Answer: 9", False, False),
]


def hash_order(ids: list[str], seed: int = 0) -> list[str]:
    """The order equal rewards are taken in: a seeded hash of the id."""
    import hashlib

    return sorted(ids, key=lambda i: hashlib.sha1(f"{seed}:{i}".encode()).hexdigest())


# equal rewards: p1's two equal replies keep the first in hash order, p2's cap keeps the first ones
P1_KEPT = hash_order(["p1#0", "p1#1"])[:1]
P2_ORDER = hash_order(["p2#0", "p2#1", "p2#2", "p2#3"])


def test_select_keeps_correct_distinct_finished_capped():
    kept, stats = select_examples(Config(max_per_prompt=2), JUDGED, RATIONALES)
    assert sorted(r["id"] for r in kept) == sorted(P1_KEPT + P2_ORDER[:2] + ["p3#r0"])
    assert [r["source"] for r in kept] == ["sample", "sample", "sample", "rationalization"]
    assert stats == {"filter_strategy": "correct", "candidates": 9, "truncated_dropped": 2, "duplicates_dropped": 1, "over_cap_dropped": 2,
                     "train_examples": 4, "prompts_covered": 3, "from_samples": 3, "from_rationales": 1,
                     "upsampled": 0, "kept_percent": 25.0, "kept_per_difficulty": {"easy": 4}}
    # training records carry the un-hinted prompt and nothing of the judge's bookkeeping
    assert set(kept[0]) == {"id", "prompt_id", "prompt_text", "response", "difficulty", "metadata", "iteration",
                            "source", "reward_score"}
    assert kept[3]["prompt_text"] == "<prompt p3>"
    assert "hint" not in kept[3] and "hinted_prompt_text" not in kept[3]


@pytest.mark.parametrize("cap", [1, 3, 4])
def test_select_max_per_prompt_cap(cap):
    kept, stats = select_examples(Config(max_per_prompt=cap), JUDGED, RATIONALES)
    assert [r["id"] for r in kept if r["prompt_id"] == "p2"] == P2_ORDER[:cap]
    assert [r["id"] for r in kept if r["prompt_id"] == "p1"] == P1_KEPT
    assert stats["over_cap_dropped"] == 4 - cap


def test_select_duplicate_rationale_of_a_kept_sample_is_dropped():
    rows = [judged("p1", 0, "Answer: 5", True)]
    kept, stats = select_examples(Config(), rows, [rationale("p1", "answer:   5", True, False)])
    assert [r["id"] for r in kept] == ["p1#0"]
    assert stats["duplicates_dropped"] == 1


def test_select_step_by_hand_writes_training_file(tmp_path, config_path):
    """create_data --steps select: the judged + rationales siblings of --output -> the training set."""
    out = tmp_path / "sel" / "train.jsonl"
    out.parent.mkdir()
    (out.parent / "train.judged.jsonl").write_text("".join(json.dumps(r) + "\n" for r in JUDGED))
    (out.parent / "train.rationales.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RATIONALES))
    create_data.main(["--config", str(config_path), "--steps", "select", "--output", str(out)])
    rows = read_jsonl(out)
    assert sorted(r["id"] for r in rows) == sorted(P1_KEPT + P2_ORDER[:2] + ["p3#r0"])  # max_per_prompt 2
    spec = PromptSpec.from_config(load_config(config_path)).to_dict()
    assert spec["k"] == 1
    assert all(r["prompt_spec"] == spec for r in rows)
    sidecar = json.loads((out.parent / "train.config.json").read_text())
    assert sidecar["metrics"]["train_examples"] == 4 and sidecar["metrics"]["from_rationales"] == 1


# --- train and evaluate ----------------------------------------------------------------------

TRAIN_ROWS = 5


def hand_training_file(path: Path, tokenizer, spec: PromptSpec) -> Path:
    rows = []
    for p in task_records("train")[:TRAIN_ROWS]:
        a, b = p["prompt"].removeprefix("What is ").removesuffix("?").split(" + ")
        answer = p["metadata"]["expected_answer"]
        rows.append({"id": f"{p['id']}#0", "prompt_id": p["id"], "prompt_text": render_prompt(tokenizer, p, spec),
                     "response": f"{a} + {b} = {answer}.\nAnswer: {answer}", "difficulty": "easy",
                     "metadata": p["metadata"], "iteration": 1, "source": "sample", "prompt_spec": spec.to_dict()})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_model_dir, tokenizer):
    """A run folder whose iteration 1 was trained by train.main on a hand-written training set."""
    root = tmp_path_factory.mktemp("trained")
    config_path = write_config(root / "tiny.json", tiny_model_dir)
    spec = PromptSpec.from_config(load_config(config_path))
    train_file = hand_training_file(root / "train.jsonl", tokenizer, spec)
    run_dir = root / "run"
    train.main(common(config_path, run_dir, 1) + ["--train_file", str(train_file)])
    return {"root": root, "config": config_path, "run_dir": run_dir, "spec": spec, "train_file": train_file}


def test_train_output_tree(trained_run, tiny_model_dir):
    it = trained_run["run_dir"] / "iter_01"
    model = it / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "selftrain_config.json"):
        assert (model / name).is_file(), name
    assert not (it / "model.partial").exists()
    assert not (model / "trainer").exists()

    saved = json.loads((model / "selftrain_config.json").read_text())
    assert saved["prompt_spec"] == trained_run["spec"].to_dict()
    assert saved["init_model"] == tiny_model_dir
    assert saved["train_file"] == str(trained_run["train_file"])

    marker = json.loads((it / "model.done").read_text())
    metrics = marker["metrics"]
    assert marker["output"] == "model"
    assert metrics["train_examples"] == TRAIN_ROWS
    assert metrics["skipped_too_long"] == 0
    assert metrics["steps"] == math.ceil(TRAIN_ROWS / 2)  # train_batch_size 2, one epoch
    assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] > 0
    assert len(metrics["loss_history"]) == metrics["steps"]
    assert marker["config"]["num_train_epochs"] == 1

    # the checkpoint is merged: plain Llama weights of the tiny model's shape, no LoRA tensors
    from safetensors import safe_open

    with safe_open(str(model / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora" in k for k in keys)
    assert json.loads((model / "config.json").read_text())["hidden_size"] == 32
    adapter = json.loads((model / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["peft_type"] == "LORA"
    check_lora_moved_the_weights(tiny_model_dir, model)  # trained: not the initial model saved again


def test_full_fine_tuning_moves_every_weight_and_saves_no_adapter(tmp_path, tiny_model_dir, tokenizer):
    from selftrain.stages.train import train as train_fn

    config = load_config(write_config(tmp_path / "full.json", tiny_model_dir, training_method="full", dtype="fp32"))
    train_file = hand_training_file(tmp_path / "train.jsonl", tokenizer, PromptSpec.from_config(config))
    metrics = train_fn(config, train_file, tmp_path / "model", tiny_model_dir)
    assert metrics["training_method"] == "full" and metrics["steps"] == math.ceil(TRAIN_ROWS / 2)
    assert not (tmp_path / "model" / "adapter").exists()
    moved, unchanged = moved_tensors(tiny_model_dir, tmp_path / "model")
    assert moved and not unchanged  # embeddings and norms train too


def test_train_rerun_is_noop(trained_run):
    before = snapshot(trained_run["run_dir"])
    train.main(common(trained_run["config"], trained_run["run_dir"], 1) + ["--train_file",
                                                                           str(trained_run["train_file"])])
    assert snapshot(trained_run["run_dir"]) == before


def test_generate_iteration_2_uses_iteration_1_model(trained_run):
    run_dir = trained_run["run_dir"]
    create_data.main(common(trained_run["config"], run_dir, 2) + ["--steps", "generate", "--max_samples", "2"])
    marker = json.loads((run_dir / "iter_02" / "samples.done").read_text())
    generator = str(run_dir / "iter_01" / "model")
    assert marker["model"] == generator
    rows = read_jsonl(run_dir / "iter_02" / marker["output"])
    assert len(rows) == 2 * N_SAMPLES
    assert {r["generator"] for r in rows} == {generator}
    assert {r["iteration"] for r in rows} == {2}


def check_eval(it: Path, n: int) -> dict:
    marker = json.loads((it / "eval.done").read_text())
    assert marker["output"].startswith("eval_") and marker["output"].endswith(".json")
    result = json.loads((it / marker["output"]).read_text())
    assert result["n"] == n
    assert result["split"] == "test"
    assert set(result["per_difficulty"]) == {"easy"}
    assert result["per_difficulty"]["easy"]["n"] == n
    assert [r["id"] for r in result["results"]] == [f"arith-test-{i:06d}" for i in range(n)]
    assert result["correct"] == sum(bool(r["is_correct"]) for r in result["results"])
    assert result["accuracy"] == round(result["correct"] / n, 4)
    assert 0.0 <= result["accuracy"] <= 1.0
    for r in result["results"]:
        assert r["finish_reason"] in ("stop", "length") and 0 <= r["num_tokens"] <= MAX_NEW
    assert marker["metrics"]["n"] == n
    return result


def test_evaluate_iteration_0(tmp_path, config_path, tiny_model_dir, capsys):
    run_dir = tmp_path / "run"
    evaluate.main(common(config_path, run_dir, 0))
    result = check_eval(run_dir / "iter_00", N_TEST)
    assert result["iteration"] == 0 and result["model"] == tiny_model_dir
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["n"] == N_TEST and printed["accuracy"] == result["accuracy"]
    # rerun: the marker makes it a no-op
    before = snapshot(run_dir)
    evaluate.main(common(config_path, run_dir, 0))
    assert snapshot(run_dir) == before


def test_evaluate_trained_model_uses_its_prompt_spec(trained_run, tmp_path):
    # a config without prompt keys: the spec must come from the checkpoint's selftrain_config.json
    plain = tmp_path / "plain.json"
    data = json.loads(trained_run["config"].read_text())
    del data["k"]
    plain.write_text(json.dumps(data))
    run_dir = trained_run["run_dir"]
    evaluate.main(common(plain, run_dir, 1))
    result = check_eval(run_dir / "iter_01", N_TEST)
    assert result["model"] == str(run_dir / "iter_01" / "model")
    assert result["prompt_spec"] == trained_run["spec"].to_dict()
    assert result["prompt_spec"]["k"] == 1


def test_evaluate_missing_checkpoint(tmp_path, config_path):
    run_dir = tmp_path / "run"
    with pytest.raises(InputError) as info:
        evaluate.main(common(config_path, run_dir, 3))
    assert f"model {run_dir / 'iter_03' / 'model'}:" in str(info.value)
    assert not run_dir.exists()


# --- filter strategies (seed 000) ----------------------------------------------------------------

def _judged(pid, idx, score, correct=None):
    return {"id": f"{pid}#{idx}", "prompt_id": pid, "sample_idx": idx, "prompt_text": f"Q {pid}",
            "response": f"reply {pid} {idx}", "finish_reason": "stop", "reward_score": score,
            "is_correct": score >= 1.0 if correct is None else correct}


FILTER_POOL = [_judged("a", 0, 0.2), _judged("a", 1, 0.9), _judged("a", 2, 0.9),
               _judged("b", 0, 0.1), _judged("b", 1, 0.5), _judged("c", 0, 1.0), _judged("c", 1, 0.0)]


@pytest.mark.parametrize("settings, expected", [
    ({"filter_strategy": "correct"}, ["c#0"]),
    ({"filter_strategy": "none"}, [r["id"] for r in FILTER_POOL]),
    ({"filter_strategy": "threshold", "filter_threshold": 0.5}, ["a#1", "a#2", "b#1", "c#0"]),
    # 30% of 7 samples rounds up to 3: the scores 1.0, 0.9, 0.9 (ties by id)
    ({"filter_strategy": "top_k_percent", "filter_top_k_percent": 30.0}, ["a#1", "a#2", "c#0"]),
    ({"filter_strategy": "top_k_percent", "filter_top_k_percent": 10.0}, ["c#0"]),
    # one per prompt, the highest score; the 0.9 tie of a#1 and a#2 goes by the seeded hash of the id
    ({"filter_strategy": "best_of_n"}, ["a#2", "b#1", "c#0"]),
    ({"filter_strategy": "best_of_n", "seed": 1}, ["a#1", "b#1", "c#0"]),
])
def test_filter_strategies_keep_exactly_these(settings, expected):
    from selftrain.stages.select import filter_samples

    assert [r["id"] for r in filter_samples(Config(**settings), FILTER_POOL)] == expected


def test_top_k_percent_spreads_equal_rewards_over_prompts():
    from selftrain.stages.select import filter_samples

    # 0/1 rewards: 10 prompts with 4 correct samples each; 25% of 80 samples = 20 kept
    pool = [_judged(f"p{i:02d}", j, 1.0 if j < 4 else 0.0) for i in range(10) for j in range(8)]
    kept = filter_samples(Config(filter_strategy="top_k_percent", filter_top_k_percent=25.0), pool)
    per_prompt = {pid: sum(r["prompt_id"] == pid for r in kept) for pid in {r["prompt_id"] for r in pool}}
    assert len(kept) == 20 and set(per_prompt.values()) == {2}  # two from every prompt, not four from five


def test_max_per_prompt_applies_after_the_filter():
    kept, stats = select_examples(Config(filter_strategy="none", max_per_prompt=1), FILTER_POOL, [])
    assert sorted(r["id"] for r in kept) == ["a#2", "b#1", "c#0"]  # the best of each prompt (a: hash order)
    assert stats["over_cap_dropped"] == 4 and stats["filter_strategy"] == "none"


def test_padding_free_training_sees_the_same_loss_as_padded(tmp_path, tiny_model_dir, tokenizer):
    """`padding_free: true` packs each batch into one row (TRL's collator; transformers builds the
    block-diagonal mask from position_ids): the same examples must give the same first loss."""
    from selftrain.stages.train import train as train_fn

    losses = {}
    for padding_free in (False, True):
        config_path = write_config(tmp_path / f"pf{padding_free}.json", tiny_model_dir, padding_free=padding_free,
                                   train_batch_size=4, dtype="fp32", learning_rate=1e-9)
        config = load_config(config_path)
        spec = PromptSpec.from_config(config)
        train_file = hand_training_file(tmp_path / "train.jsonl", tokenizer, spec)
        metrics = train_fn(config, train_file, tmp_path / f"model_{padding_free}", tiny_model_dir)
        losses[padding_free] = metrics["loss_history"]
    assert len(losses[True]) == len(losses[False]) >= 2
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)


def test_lm_head_on_completions_only_keeps_every_labelled_token():
    from selftrain.stages.train import completion_positions_only

    labels = torch.tensor([[-100, -100, -100, 5, 6, -100], [-100, -100, -100, -100, 7, 8]])
    inputs = {"input_ids": torch.arange(12).view(2, 6), "labels": labels}
    cut = completion_positions_only(inputs)
    # position 2 predicts the first labelled token (position 3): logits from 2 on, labels from 2 on
    assert cut["logits_to_keep"] == 4 and cut["labels"].tolist() == [[-100, 5, 6, -100], [-100, -100, 7, 8]]
    assert cut["input_ids"] is inputs["input_ids"]  # the model still reads the whole sequence
    assert completion_positions_only({"input_ids": inputs["input_ids"]}).keys() == {"input_ids"}
    whole = {"labels": torch.tensor([[-100, 1, 2]])}
    assert completion_positions_only(whole) is whole  # nothing to skip


def test_lm_head_on_completions_only_trains_with_the_same_loss(tmp_path, tiny_model_dir, tokenizer, monkeypatch):
    """train.py runs the LM head only where a labelled token is predicted: the same examples must
    give the same losses, step by step, as the head on every position."""
    from selftrain.stages import train as stage

    cut = []
    original = stage.completion_positions_only
    monkeypatch.setattr(stage, "completion_positions_only",
                        lambda inputs: cut.append(original(inputs).get("logits_to_keep")) or original(inputs))
    losses = {}
    for only in (False, True):
        config = load_config(write_config(tmp_path / f"c{only}.json", tiny_model_dir, train_batch_size=4, dtype="fp32"))
        spec = PromptSpec.from_config(config)
        train_file = hand_training_file(tmp_path / "train.jsonl", tokenizer, spec)
        losses[only] = stage.train(config, train_file, tmp_path / f"model_{only}", tiny_model_dir,
                                   lm_head_on_completions_only=only)["loss_history"]
    assert cut and all(keep is not None for keep in cut)  # every batch had prompt positions to skip
    assert len(losses[True]) >= 2
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
