"""train.py under `accelerate launch --multi_gpu --num_processes 2` (gloo on CPU) against one process.

Same global batch: 4 x 2 accumulation steps in one process, 4 x 1 in each of two.
Both runs see the same examples at every optimizer step: train.py groups by
length over the global batch with a generator seeded by `seed`, and
accelerate hands process p the p-th per-device slice of each global batch,
which are the micro-batches one process accumulates. The loss is normalised by
the tokens of the whole global batch in both (transformers gathers the token
count across processes). LoRA weights start equal (seeded; DDP broadcasts rank
0's), and LoRA dropout is off (each process draws its own masks).

Tolerance: measured here, the loss curves and the trained weights are equal
bit for bit. What can differ elsewhere is the order of floating-point sums (an
all-reduce of two gradients instead of accumulating them): ~1e-7 relative per
step in fp32, so 1e-5 relative on losses and weights leaves room for that
while a real mismatch fails: before the global-batch sampler the second
process saw other examples per step and step 2 was already 5e-4 off, and the
loss moves by > 1e-2 per step.

(`accelerate launch --num_processes 2` without `--multi_gpu` starts a single
process on a machine without GPUs: that is accelerate's launcher; train.py
logs a note when it sees it.)
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from selftrain.config import load_config
from selftrain.prompts import PromptSpec, render_prompt
from selftrain.tasks.arithmetic import generate_split
from tests.test_stages import write_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = 32


def training_file(path: Path, tokenizer, spec: PromptSpec) -> Path:
    rows = []
    for p in generate_split(EXAMPLES, 1, ["easy", "medium"], 3)[0]:
        answer = p["metadata"]["expected_answer"]
        rows.append({"id": p["id"], "prompt_id": p["id"], "prompt_text": render_prompt(tokenizer, p, spec),
                     "response": f"It is {answer}.\nAnswer: {answer}", "prompt_spec": spec.to_dict()})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train(cmd: list[str], tmp_path: Path, name: str, *flags: str) -> dict:
    config = write_config(tmp_path / "c.json", str(tmp_path / "base"), train_batch_size=4, num_train_epochs=1,
                          learning_rate=1e-3, dtype="fp32", warmup_ratio=0.0, lora_dropout=0.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "RANK", "WORLD_SIZE"))}
    proc = subprocess.run(cmd + ["train.py", "--config", str(config), "--train_file", str(tmp_path / "train.jsonl"),
                                 "--output_dir", str(tmp_path / name), *flags],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((tmp_path / name / "selftrain_config.json").read_text())["metrics"]


def one_and_two(tmp_path: Path, optim: str, lr: float) -> tuple[dict, dict]:
    python = str(REPO / ".venv" / "bin" / "python")
    flags = ["--set", f"optim={optim}", "--set", f"learning_rate={lr}"]
    one = train([python], tmp_path, f"one-{optim}", *flags, "--set", "gradient_accumulation_steps=2")
    two = train([python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                 "--num_machines", "1", "--mixed_precision", "no", "--main_process_port", "29517"],
                tmp_path, f"two-{optim}", *flags, "--set", "gradient_accumulation_steps=1")
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["global_batch"] == two["global_batch"] == 8
    assert one["steps"] == two["steps"] == EXAMPLES // 8
    assert max(one["loss_history"]) - min(one["loss_history"]) > 1e-2  # the tolerances are far below the signal
    return one, two


def weights(tmp_path: Path, name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(tmp_path / name / "model.safetensors"))


@pytest.fixture
def prepared(tmp_path, tiny_model_dir, tokenizer):
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "base")
    spec = PromptSpec.from_config(load_config(write_config(tmp_path / "c.json", str(tmp_path / "base"))))
    training_file(tmp_path / "train.jsonl", tokenizer, spec)
    return tmp_path


@pytest.mark.slow
def test_two_processes_match_one_process_of_the_same_global_batch(prepared):
    one, two = one_and_two(prepared, "adamw_torch", 1e-3)
    assert two["loss_history"] == pytest.approx(one["loss_history"], rel=1e-5)
    a, b, base = weights(prepared, "one-adamw_torch"), weights(prepared, "two-adamw_torch"), weights(prepared, "base")
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):
        update = (a[name] - base[name]).norm().item()
        assert update > 1e-4  # training moved the weights
        assert (a[name] - b[name]).norm().item() <= 1e-5 * update
