"""Training benchmark: trained tokens/s of train.py against TRL's default SFTTrainer,
on the same examples, one after the other in one run, on this machine's CPU kind
(printed; `make bench-train` runs it a second time capped to AVX2 kernels).

    trl_default             SFTTrainer as its documentation shows it: prompt/completion
                            data, SFTConfig defaults (bf16 autocast, gradient checkpointing,
                            entropy and token accuracy in the loss, no length grouping)
    selftrain               train.py's trainer (`stages.train.train`) as the demo runs it
    selftrain_fp32          the same in fp32 (dtype: fp32)
    selftrain_bf16          the same with bf16 autocast (dtype: bf16)
    selftrain_padding_free  the same with padding_free: true (the batch as one packed row)
    selftrain_batch8        the same global batch as 8 x 1 instead of the demo's 4 x 2
    selftrain_all_logits    the same with the LM head on every position, prompts included
                            (train.py runs it only where a labelled token is predicted)

All train LoRA r=16 on every linear layer for the same epochs, batch, learning
rate and seed. "Tokens" are the real (non-padding) tokens of the examples times
the epochs; seconds are the training loop only (loading and saving apart).

    .venv/bin/python bench/bench_training.py [--train_file results/demo/iter_01/train.jsonl]
        [--examples 160] [--epochs 1] [--variants trl_default,selftrain,...]

Without --train_file the examples are the demo task's prompts with replies in
the shape the demo keeps (a short working line and the answer line).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from options import pick  # noqa: E402  (bench/options.py)

import torch  # noqa: E402

from selftrain.config import load_config  # noqa: E402
from selftrain.data import load_train_prompts  # noqa: E402
from selftrain.models import cpu_kind, load_tokenizer  # noqa: E402
from selftrain.prompts import PromptSpec, encode_example, render_prompt  # noqa: E402

VARIANTS = ("trl_default", "selftrain", "selftrain_fp32", "selftrain_bf16", "selftrain_padding_free",
            "selftrain_batch8", "selftrain_all_logits")
OVERRIDES = {"selftrain": {}, "selftrain_fp32": {"dtype": "fp32"}, "selftrain_bf16": {"dtype": "bf16"},
             "selftrain_padding_free": {"padding_free": True},
             "selftrain_batch8": {"train_batch_size": 8, "gradient_accumulation_steps": 1},
             "selftrain_all_logits": {}}


def synthetic_rows(config, tokenizer, spec, n: int) -> list[dict]:
    rows = []
    for i, r in enumerate(load_train_prompts(config, 1)[:n]):
        answer = r["metadata"]["expected_answer"]
        working = "" if i % 3 == 0 else f"{r['prompt'].split('?')[0].split('is')[-1].strip()} = {answer}.\n"
        rows.append({"id": r["id"], "prompt_text": render_prompt(tokenizer, r, spec),
                     "response": f"{working}Answer: {answer}", "prompt_spec": spec.to_dict()})
    return rows


def run_trl_default(config, rows, tokenizer, epochs: float) -> float:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from selftrain.models import resolve_model

    location = resolve_model(config.base_model_path)
    data = Dataset.from_list([{"prompt": r["prompt_text"], "completion": r["response"] + tokenizer.eos_token}
                              for r in rows])
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, num_train_epochs=epochs, per_device_train_batch_size=config.train_batch_size,
                         gradient_accumulation_steps=config.gradient_accumulation_steps,
                         learning_rate=config.learning_rate, report_to="none", save_strategy="no", seed=config.seed,
                         use_cpu=True, logging_steps=10, disable_tqdm=True)
        trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(location), args=args, train_dataset=data,
                             processing_class=tokenizer,
                             peft_config=LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                    target_modules="all-linear", task_type="CAUSAL_LM"))
        started = time.perf_counter()
        trainer.train()
        return time.perf_counter() - started


def run_selftrain(config, train_file: Path, out: Path, all_logits: bool = False) -> tuple[float, float]:
    """(seconds, mean training loss)"""
    from selftrain.stages.train import train

    metrics = train(config, train_file, out, config.base_model_path, lm_head_on_completions_only=not all_logits)
    return metrics["seconds"], metrics["train_loss"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_file", help="a selected training file (default: synthetic demo-task examples)")
    p.add_argument("--examples", type=int, default=160)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--variants", default="trl_default,selftrain,selftrain_all_logits,selftrain_fp32,"
                                          "selftrain_padding_free")
    args = p.parse_args()
    variants = pick(args.variants, VARIANTS, "variant")
    config = load_config("configs/demo.yaml", {"task.n_train": args.examples, "num_train_epochs": args.epochs,
                                               "lora_target_modules": "all-linear"})
    tokenizer = load_tokenizer(config.base_model_path)
    spec = PromptSpec.from_config(config)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        if args.train_file:
            rows = [json.loads(line) for line in Path(args.train_file).read_text().splitlines() if line.strip()]
            rows = rows[: args.examples]
        else:
            rows = synthetic_rows(config, tokenizer, spec, args.examples)
        train_file = work / "train.jsonl"
        train_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
        lengths = [len(encode_example(tokenizer, r["prompt_text"], r["response"], PromptSpec(**r["prompt_spec"]))
                           ["input_ids"]) for r in rows]
        tokens = sum(lengths) * args.epochs
        print(f"CPU kind {cpu_kind()} ({torch.get_num_threads()} threads), {len(rows)} examples "
              f"({min(lengths)}-{max(lengths)} tokens, {tokens:.0f} trained tokens per variant), "
              f"batch {config.train_batch_size} x {config.gradient_accumulation_steps}, {args.epochs} epoch(s)",
              flush=True)
        results = []
        for name in variants:
            if name == "trl_default":
                seconds, loss = run_trl_default(config, rows, tokenizer, args.epochs), None
            else:
                variant = load_config("configs/demo.yaml", {"task.n_train": args.examples,
                                                            "num_train_epochs": args.epochs,
                                                            "lora_target_modules": "all-linear", **OVERRIDES[name]})
                seconds, loss = run_selftrain(variant, train_file, work / name, name == "selftrain_all_logits")
            results.append((name, seconds, loss))
            print(f"{name:>24}: {seconds:6.1f} s = {tokens / seconds:7.1f} trained tokens/s (loss {loss})", flush=True)
    base = next((seconds for name, seconds, _ in results if name == "trl_default"), None)
    print("\n| variant | seconds | trained tokens/s | vs TRL default | mean loss |\n|---|---|---|---|---|")
    for name, seconds, loss in results:
        ratio = f"{base / seconds:.2f}x" if base else "-"
        print(f"| {name} | {seconds:.1f} | {tokens / seconds:.1f} | {ratio} | {loss if loss is not None else '-'} |")


if __name__ == "__main__":
    main()
