"""train.py: SFT on the selected examples with TRL's SFTTrainer (LoRA by default).

STaR trains every iteration from the base model (`init: base`); `--init previous`
continues from the previous iteration's model instead. Loss is on the reply and
its EOS only. The output directory holds a merged checkpoint (what the next
iteration generates with and evaluate.py loads), the LoRA adapter in
`adapter/`, and `selftrain_config.json` (config, prompt spec, metrics).

  python train.py --iteration 1 --train_file data/star_iter1_train.jsonl \\
      --base_model smollm2-135m --output_dir results/model_star_iter1 --epochs 3
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch

from selftrain import training
from selftrain.cli import base_parser, resolve_config, run
from selftrain.config import Config
from selftrain.errors import InputError
from selftrain.logging import log
from selftrain.models import from_pretrained
from selftrain.prompts import PromptSpec, encode_example
from selftrain.records import iter_jsonl
from selftrain.runs import finished_output, model_dir

FLAGS = {"epochs": "num_train_epochs", "batch_size": "train_batch_size", "lr": "learning_rate",
         "base_model": "base_model_path", "init": "init", "training_method": "training_method"}


def parser():
    p = base_parser(__doc__)
    p.add_argument("--train_file", help="training JSONL, or several separated by commas "
                                        "(default: data/star_iter{N}_train.jsonl)")
    p.add_argument("--train_stages", default="train", help="in a run: the finished stages of iteration N whose "
                                                           "outputs are trained on, e.g. ift,eft (default: train)")
    p.add_argument("--base_model", help="model M_0 (config: base_model_path; default smollm2-135m)")
    p.add_argument("--output_dir", help="checkpoint folder (default: results/model_star_iter{N})")
    p.add_argument("--epochs", type=float, help="config: num_train_epochs")
    p.add_argument("--batch_size", type=int, help="per-device batch size (config: train_batch_size)")
    p.add_argument("--lr", type=float, help="config: learning_rate")
    p.add_argument("--init", choices=["base", "previous"], help="train from the base model (STaR) or M_{N-1}")
    p.add_argument("--training_method", choices=["lora", "full", "qlora"])
    return p


def read_train_file(path) -> tuple[list[dict], PromptSpec]:
    return read_train_files([path])


def read_train_files(paths) -> tuple[list[dict], PromptSpec]:
    """The examples of one or more training files (e.g. Self-Rewarding's IFT + EFT), one prompt format."""
    rows, specs = [], set()
    for path in paths:
        for lineno, obj in iter_jsonl(path):
            for key in ("prompt_text", "response"):
                if not isinstance(obj.get(key), str):
                    raise InputError(f"{path}:{lineno}: {key}: missing or not a string (is this a selected training file?)")
            if not isinstance(obj.get("prompt_spec"), dict):
                raise InputError(f"{path}:{lineno}: prompt_spec: missing")
            specs.add(json.dumps(obj["prompt_spec"], sort_keys=True))
            rows.append(obj)
    where = ", ".join(map(str, paths))
    if not rows:
        raise InputError(f"{where}: no training examples (no sample was correct and no rationale was kept)")
    if len(specs) > 1:
        raise InputError(f"{where}: examples were rendered with {len(specs)} different prompt specs; "
                         f"train on one prompt format at a time")
    return rows, PromptSpec(**json.loads(specs.pop()))


def build_dataset(tokenizer, rows: list[dict], spec: PromptSpec, max_len: int):
    from datasets import Dataset

    examples, too_long = [], 0
    for row in rows:
        example = encode_example(tokenizer, row["prompt_text"], row["response"], spec)
        if len(example["input_ids"]) > max_len:
            too_long += 1  # cutting it would drop the EOS or the answer: skip it and say so
            continue
        examples.append(example)
    if not examples:
        raise InputError(f"every training example is longer than max_seq_length={max_len}")
    return Dataset.from_list(examples), too_long


def completion_positions_only(inputs: dict) -> dict:
    """The batch with `logits_to_keep` set so the model computes logits only from the first position
    whose next token carries a label, and the labels cut to the same positions. The model's own
    loss shifts the labels by one inside the kept span, so every labelled token is still predicted
    from the same position and the loss (a sum over labelled tokens, divided by the batch's count
    of them) is the same number.

    On the demo's padded batches (a 53-token prompt, ~20 reply tokens) this skips ~70% of the LM
    head (49k x 576) and of its float32 logits: 1.23x trained tokens/s, the same losses. A packed
    padding-free row skips only its first example's prompt."""
    labels = inputs.get("labels")
    if labels is None:
        return inputs
    labelled = (labels != -100).any(0).nonzero()
    start = max(int(labelled[0]) - 1, 0) if len(labelled) else 0
    if start == 0:
        return inputs
    return {**inputs, "labels": labels[:, start:], "logits_to_keep": labels.shape[1] - start}


def _lean_trainer_class(completions_only: bool):
    """SFTTrainer whose loss is the model's own token-mean cross-entropy on the labels.

    TRL's default loss also computes per-token entropy and accuracy through a
    chunked LM head, which doubled the step time of a 135M model on this CPU
    (45.6 s vs 22.8 s for the same 8 steps, identical losses). The data path
    (pre-tokenized input_ids + labels masked with -100), the PEFT wrapping and
    the collator stay TRL's.
    """
    from transformers import Trainer
    from trl import SFTTrainer

    class LeanSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if completions_only:
                inputs = completion_positions_only(inputs)
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

        def _get_train_sampler(self, train_dataset=None):
            """Length grouping over the *global* batch, from a generator seeded with `seed`.

            transformers groups by per-device batch x accumulation and draws from the
            global torch RNG, so the same global batch split over 2 processes saw other
            examples per step than in one process; grouped this way, process p takes the
            p-th slice of the same global batches one process accumulates."""
            if self.args.train_sampling_strategy != "group_by_length":
                return super()._get_train_sampler(train_dataset)
            from transformers.trainer_pt_utils import LengthGroupedSampler

            dataset = train_dataset if train_dataset is not None else self.train_dataset
            args = self.args
            global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            return LengthGroupedSampler(global_batch, lengths=[len(ids) for ids in dataset["input_ids"]],
                                        generator=torch.Generator().manual_seed(args.seed))

    return LeanSFTTrainer


def train(config: Config, train_file, output_dir, init_model: str, *,
          lm_head_on_completions_only: bool = True) -> dict | None:
    """Train and save; under `accelerate launch` every process trains, the main one saves and returns
    the metrics, the others return None. `lm_head_on_completions_only`: `completion_positions_only`
    (False only for bench/bench_training.py's comparison; a model whose forward takes no
    `logits_to_keep` runs the head on every position, and the log says so)."""
    from transformers import AutoTokenizer
    from trl import SFTConfig

    state = training.process_state()
    training.no_hub_telemetry()
    files = train_file if isinstance(train_file, (list, tuple)) else [train_file]
    rows, spec = read_train_files(files)
    tokenizer = from_pretrained(AutoTokenizer, init_model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset, too_long = build_dataset(tokenizer, rows, spec, config.max_seq_length)
    precision = training.precision(config)
    model, quantized = training.load_trainable_model(config, init_model, state, precision)
    peft_config = training.lora_config(config)
    output_dir = Path(output_dir)
    work = training.work_dir(output_dir, state)
    args = SFTConfig(
        **training.trainer_arguments(config, work, precision, epochs=config.num_train_epochs,
                                     batch_size=config.train_batch_size,
                                     accumulation=config.gradient_accumulation_steps,
                                     learning_rate=config.learning_rate, output_dir=output_dir),
        # build_dataset already skipped examples over max_seq_length; TRL refuses max_length with padding_free
        max_length=None if config.padding_free else config.max_seq_length, padding_free=config.padding_free,
        train_sampling_strategy="group_by_length",
    )
    if lm_head_on_completions_only and "logits_to_keep" not in inspect.signature(model.forward).parameters:
        log(f"note: {type(model).__name__}.forward takes no logits_to_keep; the LM head runs on every position")
        lm_head_on_completions_only = False
    trainer = _lean_trainer_class(lm_head_on_completions_only)(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    world = state.num_processes
    log(f"training on {len(dataset)} examples ({too_long} over max_seq_length skipped), "
        f"{config.training_method}, bf16={precision == torch.bfloat16}, from {init_model}, {world} process(es), "
        f"global batch {config.train_batch_size} x {config.gradient_accumulation_steps} x {world}")
    finished = training.run_trainer(trainer, state)
    if finished is None:
        return None
    result, seconds = finished
    tokens = sum(len(x) for x in dataset["input_ids"]) * config.num_train_epochs
    metrics = {
        "train_examples": len(dataset), "skipped_too_long": too_long,
        **training.common_metrics(config, result, trainer, seconds, quantized=quantized, processes=world,
                                  batch_size=config.train_batch_size,
                                  accumulation=config.gradient_accumulation_steps),
        "trained_tokens_per_s": round(tokens / seconds, 1) if seconds else None,
    }
    training.check_finite(result.training_loss)
    training.save_checkpoint(trainer, tokenizer, work, output_dir, config=config, init_model=init_model, record={
        "prompt_spec": spec.to_dict(), "init_model": init_model, "train_file": ",".join(map(str, files)), "metrics": metrics})
    log(f"saved {output_dir} (loss {metrics['first_loss']} -> {metrics['last_loss']}, {seconds:.0f}s)")
    return metrics


def main(argv=None):
    args = parser().parse_args(argv)
    config = resolve_config(args, FLAGS)
    n = args.iteration
    if n < 1:
        raise InputError(f"--iteration {n}: training starts at iteration 1 (iteration 0 is the base model)")
    if args.train_file:
        train_files = [Path(f) for f in args.train_file.split(",") if f]
    elif args.run_dir:
        train_files = [finished_output(args.run_dir, n, stage) for stage in args.train_stages.split(",") if stage]
    else:
        train_files = [Path(f"data/star_iter{n}_train.jsonl")]
    out = training.model_output(args.run_dir, n, args.output_dir, {"train": train_files[0]})
    if out is None:
        return
    init_model = config.base_model_path
    if config.init == "previous" and n > 1:
        init_model = str(model_dir(args.run_dir, n - 1))
    metrics = train(config, train_files, out.path, init_model)
    if out.marker is not None and metrics is not None:  # the main process writes the marker
        out.finish(config, metrics, {"init_model": init_model, "train_file": ",".join(map(str, train_files))})


if __name__ == "__main__":
    run(main)
