"""What training changed: a saved checkpoint's tensors against the model it started from.

Shared by the SFT tests (tests/test_stages.py) and the DPO tests (tests/test_dpo.py).
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # all-linear on Llama


def moved_tensors(init_dir: str | Path, trained_dir: str | Path) -> tuple[list[str], list[str]]:
    """(names of the tensors that differ, names of those equal to the bit) between two checkpoints of the
    same architecture."""
    init = load_file(str(Path(init_dir) / "model.safetensors"))
    trained = load_file(str(Path(trained_dir) / "model.safetensors"))
    assert init.keys() == trained.keys()
    assert all(init[k].shape == trained[k].shape for k in init)
    moved = sorted(k for k in init if not torch.equal(init[k], trained[k]))
    return moved, sorted(set(init) - set(moved))


def check_lora_moved_the_weights(init_dir: str | Path, trained_dir: str | Path) -> None:
    """A merged LoRA checkpoint: every adapted linear layer moved, nothing else did, and every B matrix
    (zero when PEFT creates it) was trained away from zero."""
    moved, unchanged = moved_tensors(init_dir, trained_dir)
    adapted = [k for k in moved + unchanged if k.endswith(tuple(f"{t}.weight" for t in LORA_TARGETS))]
    assert adapted and moved == sorted(adapted), f"moved {moved}, adapted {adapted}"
    assert unchanged and all("norm" in k or "embed_tokens" in k for k in unchanged), unchanged
    adapter = load_file(str(Path(trained_dir) / "adapter" / "adapter_model.safetensors"))
    b_matrices = [t for k, t in adapter.items() if "lora_B" in k]
    assert len(b_matrices) == len(adapted) and all(t.abs().max() > 0 for t in b_matrices)
