"""training_method: qlora — a 4-bit NF4 base with LoRA where bitsandbytes runs, a clear stop elsewhere."""
from __future__ import annotations

import json

import pytest

from selftrain.config import load_config
from selftrain.errors import InputError
from selftrain.prompts import PromptSpec
from selftrain.stages import train
from tests.test_stages import common, hand_training_file, write_config


def test_qlora_trains_4bit_and_saves_a_full_precision_merged_model(tmp_path, tiny_model_dir, tokenizer):
    pytest.importorskip("bitsandbytes")
    from selftrain.models import check_4bit

    try:
        check_4bit()
    except InputError as exc:
        pytest.skip(f"bitsandbytes 4-bit cannot run here: {exc}")
    config_path = write_config(tmp_path / "c.json", tiny_model_dir, training_method="qlora")
    train_file = hand_training_file(tmp_path / "t.jsonl", tokenizer, PromptSpec.from_config(load_config(config_path)))
    train.main(common(config_path, tmp_path / "run", 1) + ["--train_file", str(train_file)])
    model_dir = tmp_path / "run" / "iter_01" / "model"
    metrics = json.loads((tmp_path / "run" / "iter_01" / "model.done").read_text())["metrics"]
    assert metrics["training_method"] == "qlora"
    assert metrics["quantized_4bit_layers"] == 14  # 2 layers x (q, k, v, o, gate, up, down)
    assert json.loads((model_dir / "adapter" / "adapter_config.json").read_text())["peft_type"] == "LORA"

    import torch
    from safetensors.torch import load_file

    merged, base = load_file(str(model_dir / "model.safetensors")), load_file(f"{tiny_model_dir}/model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert merged[name].dtype == torch.float32 and merged[name].shape == base[name].shape  # not 4-bit packed
    assert not torch.equal(merged[name], base[name])  # the trained adapter is folded in
    assert not any("lora" in k for k in merged)


def test_qlora_where_4bit_cannot_run_stops_before_any_file(tmp_path, tiny_model_dir, monkeypatch):
    import selftrain.models

    def cannot(where="config"):
        raise InputError(f"{where}: training_method: qlora: bitsandbytes 4-bit cannot run on cpu here (probe)")

    monkeypatch.setattr(selftrain.models, "check_4bit", cannot)
    config_path = write_config(tmp_path / "c.json", tiny_model_dir, training_method="qlora")
    with pytest.raises(InputError, match="qlora: bitsandbytes 4-bit cannot run"):
        train.main(common(config_path, tmp_path / "run", 1) + ["--train_file", str(tmp_path / "t.jsonl")])
    assert not (tmp_path / "run").exists()
