"""What the training stages share: SFT (stages/train.py) and DPO (stages/train_dpo.py).

The processes (one, or several under `accelerate launch`), the precision, the
model to train (LoRA / QLoRA / full) and its LoRA config, the TrainingArguments
both TRL trainers take alike (their trackers: selftrain/tracking.py), the metrics
every trainer reports, and the save: a merged checkpoint (what generation and
evaluation load), the adapter in `adapter/` and `selftrain_config.json` (prompt
spec, init model, metrics, config), written in `<output>.partial/` and renamed
whole.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import torch

from selftrain import tracking
from selftrain.config import Config
from selftrain.logging import log
from selftrain.models import default_device, from_pretrained, parse_dtype
from selftrain.runs import StageOutput, Stage, model_dir, peak_rss_gib


def process_state():
    """accelerate's PartialState: one process unless started by accelerate launch / torchrun (on CPU
    the processes talk through gloo)."""
    from accelerate import PartialState

    device = default_device()
    state = PartialState(cpu=device.type == "cpu")
    if state.num_processes == 1 and os.environ.get("ACCELERATE_USE_CPU") and "WORLD_SIZE" not in os.environ:
        log("note: accelerate launch started a single process; on CPU it starts several only with --multi_gpu "
            "(its torchrun launcher), e.g. accelerate launch --multi_gpu --num_processes 2 train.py ...")
    return state


def no_hub_telemetry() -> None:
    """TRL's trainers ping the Hub on construction unless HF_HUB_DISABLE_TELEMETRY or HF_HUB_OFFLINE was
    set before huggingface_hub was imported (it reads them once, at import): say no here, as if it had
    been. Training never needs the Hub: models and tokenizers are passed in, loaded from disk."""
    from huggingface_hub import constants

    constants.HF_HUB_DISABLE_TELEMETRY = True


def precision(config: Config) -> torch.dtype:
    """auto: bf16 where the hardware has it; fp32 trains in fp32."""
    return parse_dtype(config.dtype, default_device())


def load_trainable_model(config: Config, init_model: str, state, dtype: torch.dtype):
    """(model, 4-bit layer count): float32 weights (bf16 runs under autocast), or for QLoRA a 4-bit
    NF4 base prepared for k-bit training."""
    from transformers import AutoModelForCausalLM

    if config.training_method != "qlora":
        return from_pretrained(AutoModelForCausalLM, init_model, dtype=torch.float32), 0
    from peft import prepare_model_for_kbit_training

    from selftrain.models import quantization_config_4bit

    device = default_device()
    quantization = quantization_config_4bit(torch.bfloat16 if dtype == torch.bfloat16 else torch.float32)
    model = from_pretrained(AutoModelForCausalLM, init_model, dtype=torch.float32,
                            quantization_config=quantization, device_map={"": state.local_process_index}
                            if device.type == "cuda" else {"": "cpu"})
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    quantized = sum(type(m).__name__ == "Linear4bit" for m in model.modules())
    log(f"qlora: {quantized} linear layers in 4-bit NF4")
    return model, quantized


def lora_config(config: Config):
    """The LoRA adapter to train (lora, qlora), or None for full fine-tuning."""
    if config.training_method not in ("lora", "qlora"):
        return None
    from peft import LoraConfig

    target = config.lora_target_modules
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=target if target == "all-linear" else target.split(","), task_type="CAUSAL_LM")


def work_dir(output_dir: Path, state) -> Path:
    """`<output>.partial/`, emptied by the main process before anyone writes to it."""
    work = output_dir.with_name(output_dir.name + ".partial")
    if state.is_main_process:
        shutil.rmtree(work, ignore_errors=True)
    state.wait_for_everyone()
    return work


def trainer_arguments(config: Config, work: Path, dtype: torch.dtype, *, epochs: float, batch_size: int,
                      accumulation: int, learning_rate: float, output_dir: Path, phase: int = 1) -> dict:
    """Keyword arguments for TRL's SFTConfig / DPOConfig that both stages set alike; the trackers
    (`report_to`) are the checkpoint's at `output_dir` (phase > 1: a later DPO phase's)."""
    return dict(
        output_dir=str(work / "trainer"), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation, learning_rate=learning_rate,
        lr_scheduler_type=config.lr_scheduler_type, warmup_steps=config.warmup_ratio,  # < 1: a ratio
        weight_decay=config.weight_decay, optim=config.optim, logging_steps=config.logging_steps, save_strategy="no",
        **tracking.trainer_settings(config, output_dir, phase),  # report_to, run_name, project
        seed=config.seed, bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16,
        use_cpu=default_device().type == "cpu",
        gradient_checkpointing=False,  # TRL turns it on by default: pure slowdown for small models
        dataloader_num_workers=0, disable_tqdm=False,
    )


def run_trainer(trainer, state):
    """Train; (result, seconds) on the main process, None on the others (they only help train)."""
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    state.wait_for_everyone()
    return (result, seconds) if state.is_main_process else None


def model_output(run_dir, iteration: int, output_dir, inputs: dict) -> StageOutput | None:
    """Where iteration N's model goes (`--output_dir`, else <run_dir>/iter_NN/model with its model.done
    marker); None when that marker exists already, which the stage then says."""
    directory = Path(output_dir) if output_dir else model_dir(run_dir, iteration)
    out = StageOutput(directory, directory.parent / "model.done" if run_dir and not output_dir else None)
    return None if Stage("model", inputs, out).done() else out


def logged(trainer, key: str) -> list[float]:
    """Every logged value of `key` (per logging step; averaged over processes), in order."""
    return [h[key] for h in trainer.state.log_history if key in h]


def common_metrics(config: Config, result, trainer, seconds: float, *, quantized: int, processes: int,
                   batch_size: int, accumulation: int) -> dict:
    losses = logged(trainer, "loss")
    return {
        "train_loss": round(result.training_loss, 4),
        "first_loss": round(losses[0], 4) if losses else None, "last_loss": round(losses[-1], 4) if losses else None,
        "steps": trainer.state.global_step, "seconds": round(seconds, 1),
        "loss_history": [round(x, 4) for x in losses], "peak_rss_gib": peak_rss_gib(),
        "training_method": config.training_method, "quantized_4bit_layers": quantized,
        "processes": processes, "global_batch": batch_size * accumulation * processes,
    }


def check_finite(training_loss: float) -> None:
    if not math.isfinite(training_loss):
        raise RuntimeError(f"training diverged (loss {training_loss}); lower the learning rate")


def merged_model(peft_model, adapter_dir: Path, init_model: str, method: str):
    """The full-precision model with the adapter folded in (what generation and evaluation load).

    A 4-bit base cannot take the merge without rounding the update away, so
    for QLoRA the adapter goes onto a fresh full-precision copy of the base.
    """
    if method != "qlora":
        return peft_model.merge_and_unload()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = from_pretrained(AutoModelForCausalLM, init_model, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def save_checkpoint(trainer, tokenizer, work: Path, output_dir: Path, *, config: Config, init_model: str,
                    record: dict) -> None:
    """Save the trained model (adapter/ too when one was trained) and `selftrain_config.json`
    (`record` + config) in `work`, then rename it to `output_dir`: it appears whole or not at all.
    Main process only."""
    from accelerate.utils import is_peft_model

    trained = trainer.accelerator.unwrap_model(trainer.model)
    if is_peft_model(trained):
        trained.save_pretrained(work / "adapter")
        trained = merged_model(trained, work / "adapter", init_model, config.training_method)
    trained.save_pretrained(work, safe_serialization=True)
    tokenizer.save_pretrained(work)
    shutil.rmtree(work / "trainer", ignore_errors=True)
    (work / "selftrain_config.json").write_text(json.dumps({**record, "config": config.to_dict()}, indent=2) + "\n")
    if output_dir.exists():
        shutil.rmtree(output_dir)
    work.rename(output_dir)
