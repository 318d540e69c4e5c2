"""train_dpo.py: preference training (DPO, Cal-DPO, Dr-DPO, ...) with TRL's DPOTrainer, LoRA by default.

Trains M_N from M_{N-1} (the base model for N = 1) on (prompt, chosen, rejected)
pairs; the reference is the init model itself (LoRA: the same weights with the
adapter switched off, TRL's PEFT rule). `dpo.loss_type` sigmoid (DPO), cal_dpo,
dr_dpo and batch_centred are selftrain/dpo_losses.py; any other loss type of TRL's
DPOTrainer (hinge, ipo, robust, ...) runs TRL's own code. The output
directory holds the merged checkpoint, the adapter in `adapter/` and
`selftrain_config.json`, exactly as train.py writes them.

`dpo.schedule` trains phases one after the other (seed 003's Phase C), each
with its own epochs, beta and loss, all against the init model: the LoRA
adapter continues from phase to phase, the reference stays the adapter switched
off. Each phase is a new trainer, so the optimizer state and the LR schedule
(with its warmup) restart at each phase. A phase with `trim` first scores the
whole pair set under the current policy (one no-grad pass, each pair's DPO
loss at the phase's beta) and trains on all but the floor(trim * pairs)
highest-loss ones; the metrics name them by their line in the pairs file.

Pairs file: JSONL in TRL's standard format, one pair a line: `prompt` (the
exact prompt text, rendered by the one prompt builder, as a `prompt_text`),
`chosen`, `rejected` (the replies that follow it; TRL adds the EOS) and
optionally `prompt_spec` (saved with the model, as train.py does).

  python train_dpo.py --pairs_file data/pairs.jsonl --base_model smollm2-135m \\
      --output_dir results/model_dpo --loss_type cal_dpo --beta 0.1
  python train_dpo.py --run_dir results/self_rewarding --iteration 2   # pairs of iteration 2, from M_1
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from selftrain import training
from selftrain.cli import base_parser, resolve_config, run
from selftrain.config import Config
from selftrain.dpo_losses import LOSSES, pair_loss, sigmoid, trim_indices
from selftrain.errors import InputError
from selftrain.logging import log
from selftrain.models import from_pretrained
from selftrain.prompts import PromptSpec, completion_text
from selftrain.records import iter_jsonl
from selftrain.runs import finished_output, model_dir

FLAGS = {"base_model": "base_model_path", "loss_type": "dpo.loss_type", "beta": "dpo.beta",
         "epochs": "dpo.num_train_epochs", "lr": "dpo.learning_rate", "batch_size": "dpo.train_batch_size",
         "training_method": "training_method"}
PAIR_FIELDS = ("prompt", "chosen", "rejected")
NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}  # batch keys the model does not take
REWARD_KEYS = ("rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")


def parser():
    p = base_parser(__doc__)
    p.add_argument("--pairs_file", help="preference pairs JSONL (default in a run: the iteration's pairs stage)")
    p.add_argument("--base_model", help="model M_0 (config: base_model_path; default smollm2-135m)")
    p.add_argument("--init_model", help="model to start from and to use as the reference "
                                        "(default: iteration N-1's model in a run, else the base model)")
    p.add_argument("--output_dir", help="checkpoint folder (default in a run: <run_dir>/iter_NN/model)")
    p.add_argument("--loss_type", help="config: dpo.loss_type (sigmoid, cal_dpo, dr_dpo or a TRL loss type)")
    p.add_argument("--beta", type=float, help="config: dpo.beta")
    p.add_argument("--epochs", type=float, help="config: dpo.num_train_epochs")
    p.add_argument("--lr", type=float, help="config: dpo.learning_rate")
    p.add_argument("--batch_size", type=int, help="pairs per device step (config: dpo.train_batch_size)")
    p.add_argument("--training_method", choices=["lora", "full", "qlora"])
    return p


def read_pairs_file(path) -> tuple[list[dict], PromptSpec | None]:
    """The pairs (prompt, chosen, rejected) and their one prompt spec (None when the file has none)."""
    rows, specs = [], set()  # each row also keeps its line in the file, which the trim reports
    for lineno, obj in iter_jsonl(path):
        for key in PAIR_FIELDS:
            value = obj.get(key)
            if value is not None and not isinstance(value, str):
                raise InputError(f"{path}:{lineno}: {key}: expected a string (TRL's standard format, the prompt "
                                 f"already rendered), got {type(value).__name__}")
            if not value or not value.strip():
                raise InputError(f"{path}:{lineno}: {key}: missing or empty")
        if obj["chosen"] == obj["rejected"]:
            raise InputError(f"{path}:{lineno}: rejected: the same text as chosen (no preference to learn)")
        spec = obj.get("prompt_spec")
        if spec is not None and not isinstance(spec, dict):
            raise InputError(f"{path}:{lineno}: prompt_spec: expected a mapping, got {type(spec).__name__}")
        specs.add(json.dumps(spec, sort_keys=True))
        rows.append({**{key: obj[key] for key in PAIR_FIELDS}, "line": lineno})
    if not rows:
        raise InputError(f"{path}: no preference pairs")
    if len(specs) > 1:
        raise InputError(f"{path}: pairs were rendered with {len(specs)} different prompt specs (or some with none); "
                         f"train on one prompt format at a time")
    spec = json.loads(specs.pop())
    if spec is None:
        return rows, None
    try:
        return rows, PromptSpec(**spec)
    except TypeError as exc:
        raise InputError(f"{path}: prompt_spec: {exc}") from None


def build_pairs_dataset(tokenizer, rows: list[dict], spec: PromptSpec | None, max_length: int):
    """A Dataset of TRL standard-format pairs (and each one's `line` in the pairs file, when the rows
    have it) and how many were skipped as too long.

    The replies become what train.py trains on after the prompt (`prompts.completion_text`, which
    with the plain layout is " " + reply). A pair whose prompt + reply + EOS exceeds max_length is
    skipped, not cut: TRL's collator would drop the EOS. The count is TRL's own tokenization
    (prompt + reply + EOS as one string)."""
    from datasets import Dataset

    eos = tokenizer.eos_token
    if eos is None:
        raise InputError("tokenizer has no eos_token: training targets could not end, and models would never stop")
    kept, too_long = [], 0
    for row in rows:
        pair = {"prompt": row["prompt"], **({"line": row["line"]} if "line" in row else {})}
        for key in ("chosen", "rejected"):
            text = completion_text(row[key], spec) if spec is not None else row[key]
            pair[key] = text if text.endswith(eos) else text + eos
        if max(len(tokenizer(pair["prompt"] + pair[k])["input_ids"]) for k in ("chosen", "rejected")) > max_length:
            too_long += 1
            continue
        kept.append(pair)
    if not kept:
        raise InputError(f"every preference pair is longer than dpo.max_length={max_length} tokens")
    return Dataset.from_list(kept), too_long


def dpo_trainer_class():
    """TRL's DPOTrainer whose loss is one of selftrain/dpo_losses.py when `loss_name` is given.

    Built on TRL's public pieces, as its docs ask of custom losses (subclass, override
    `compute_loss`): the policy's per-token log-probabilities from the fused LM head that
    DPOTrainer patches onto the model (the same call its own loss makes, through the PEFT wrapper),
    summed over the completion, and the reference's from `compute_ref_log_probs` (adapter off).
    Logged under TRL's metric names, plus `beta` and each loss's own terms. `loss_name=None`: TRL's
    own loss path, untouched. The DPOConfig knobs of TRL's loss code (ld_alpha, f_divergence_type,
    use_weighting, an MoE aux loss) do not apply to ours; train_dpo never sets them.

    Given a PeftModel (the adapter of an earlier phase, continued), TRL copies its adapter as a frozen
    "ref" adapter and makes that the reference, i.e. the policy as it entered the phase; that copy is
    deleted here, so the reference is the adapter switched off: the init model, in every phase."""
    from accelerate.utils import is_peft_model
    from trl import DPOTrainer

    class SelftrainDPOTrainer(DPOTrainer):
        def __init__(self, *args, loss_name: str | None = None, cal_weight: float = 1.0, dr_beta: float = 1.0,
                     centre_ema: float = 0.0, **kwargs):
            self.loss_name, self.cal_weight, self.dr_beta, self.centre_ema = loss_name, cal_weight, dr_beta, centre_ema
            self.running_centre: float | None = None  # batch_centred: the mu of the last training micro-batch
            super().__init__(*args, **kwargs)
            model = self.accelerator.unwrap_model(self.model)
            if self.ref_model is None and is_peft_model(model) and "ref" in model.peft_config:
                model.delete_adapter("ref")

        def completion_log_probs(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
            """The policy's (chosen, rejected) log-probabilities, summed over the completion tokens."""
            completion_mask = inputs["completion_mask"]
            model_kwargs = {k: v for k, v in inputs.items() if k not in NON_MODEL_KEYS}
            labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
            outputs = model(**model_kwargs, labels=labels, use_cache=False, fused_lm_head=True)
            # per-token log-probs of each next token, shifted; 0 where the label is not a completion token
            logps = outputs.log_probs[:, -(completion_mask.size(1) - 1):].sum(dim=1)
            return logps.chunk(2, dim=0)  # the batch is [chosen..., rejected...]

        def reference_log_probs(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
            if self.precompute_ref_logps:
                return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            return self.compute_ref_log_probs(self.ref_model if self.ref_model is not None else model, inputs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.loss_name is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            policy_chosen, policy_rejected = self.completion_log_probs(model, inputs)
            ref_chosen, ref_rejected = self.reference_log_probs(model, inputs)
            result = pair_loss(self.loss_name, policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                               beta=self.beta, cal_weight=self.cal_weight, dr_beta=self.dr_beta,
                               centre_ema=self.centre_ema, running_centre=self.running_centre)
            if "centre" in result.terms and self.model.training:
                self.running_centre = result.terms["centre"][0].item()
            self._log_pair_metrics(policy_chosen.detach(), policy_rejected.detach(), ref_chosen, ref_rejected, result)
            if return_outputs:
                with torch.no_grad():
                    model_kwargs = {k: v for k, v in inputs.items() if k not in NON_MODEL_KEYS}
                    outputs = model(**model_kwargs)  # the logits, which the fused head does not build
                return result.loss, outputs
            return result.loss

        def pair_dpo_losses(self, beta: float) -> list[float]:
            """Each pair of train_dataset's DPO loss -log sigmoid(beta * delta) under the current policy, in
            order: one no-grad pass over the whole set (each process passes over all of it)."""
            model, data, size = self.model, self.train_dataset, self.args.per_device_train_batch_size
            was_training, losses = model.training, []
            model.eval()
            try:
                with torch.no_grad(), self.compute_loss_context_manager():
                    for start in range(0, len(data), size):
                        batch = self._prepare_inputs(self.data_collator(
                            [data[i] for i in range(start, min(start + size, len(data)))]))
                        logps = (*self.completion_log_probs(model, batch), *self.reference_log_probs(model, batch))
                        losses += sigmoid(*logps, beta=beta).per_pair.tolist()
            finally:
                model.train(was_training)
            return losses

        def _log_pair_metrics(self, policy_chosen, policy_rejected, ref_chosen, ref_rejected, result) -> None:
            metrics = self._metrics["train" if self.model.training else "eval"]
            gather = self.accelerator.gather

            def add(key: str, values: torch.Tensor) -> None:
                metrics[key].append(gather(values.detach().float()).mean().item())

            chosen_rewards = self.beta * (policy_chosen - ref_chosen)  # TRL's implicit reward, for every loss
            rejected_rewards = self.beta * (policy_rejected - ref_rejected)
            add("rewards/chosen", chosen_rewards)
            add("rewards/rejected", rejected_rewards)
            add("rewards/accuracies", (chosen_rewards > rejected_rewards).float())
            add("rewards/margins", chosen_rewards - rejected_rewards)
            add("logps/chosen", policy_chosen)
            add("logps/rejected", policy_rejected)
            metrics["beta"].append(self.beta)
            for name, term in result.terms.items():
                if name != "weight":
                    add(f"{self.loss_name}/{name}", term)
            if "weight" in result.terms:  # Dr-DPO: how uneven the pairs' weights are (1/B when even)
                add(f"{self.loss_name}/max_weight", result.terms["weight"].max())

    return SelftrainDPOTrainer


def _logged(histories: list[list[dict]], key: str) -> list[float]:
    """Every logged value of `key` over the phases' log histories, in order."""
    return [h[key] for history in histories for h in history if key in h]


def _summary(histories: list[list[dict]]) -> dict:
    """Final and mean of the reward metrics, first and last chosen/rejected log-probs, over every phase."""
    out = {}
    for key in REWARD_KEYS:
        values = _logged(histories, key)
        name = key.replace("/", "_")
        out[f"final_{name}"] = round(values[-1], 4) if values else None
        out[f"mean_{name}"] = round(sum(values) / len(values), 4) if values else None
    for key in ("logps/chosen", "logps/rejected"):
        values = _logged(histories, key)
        out[f"first_{key.replace('/', '_')}"] = round(values[0], 4) if values else None
        out[f"last_{key.replace('/', '_')}"] = round(values[-1], 4) if values else None
    return out


def _phase_trainer(config: Config, phase, model, dataset, tokenizer, work: Path, precision, peft_config,
                   data_seed: int, output_dir: Path, phase_number: int):
    """The trainer of phase `phase_number` (from 1) of the checkpoint `output_dir`; `peft_config` None with a
    PeftModel continues its adapter."""
    from trl import DPOConfig

    dpo = config.dpo
    ours = phase.loss_type in LOSSES
    args = DPOConfig(
        **training.trainer_arguments(config, work, precision, epochs=phase.epochs,
                                     batch_size=dpo.train_batch_size, accumulation=dpo.gradient_accumulation_steps,
                                     learning_rate=dpo.learning_rate, output_dir=output_dir, phase=phase_number),
        data_seed=data_seed, beta=phase.beta, max_length=dpo.max_length,
        loss_type=["sigmoid" if ours else phase.loss_type],  # ours: TRL's checks see plain DPO, compute_loss is ours
        label_smoothing=0.0 if ours else dpo.label_smoothing,
    )
    return dpo_trainer_class()(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                               peft_config=peft_config, loss_name=phase.loss_type if ours else None,
                               cal_weight=dpo.cal_weight, dr_beta=dpo.dr_beta, centre_ema=dpo.centre_ema)


def _trim(trainer, share: float, beta: float) -> dict:
    """Drop the `share` of trainer.train_dataset with the highest DPO loss at `beta` under the current
    policy (dpo_losses.trim_indices over the whole set); the dropped pairs' lines in the pairs file."""
    data = trainer.train_dataset
    losses = trainer.pair_dpo_losses(beta)
    drop = trim_indices(losses, share)
    keep = sorted(set(range(len(data))) - set(drop))
    lines = data["line"]
    trainer.train_dataset = data.select(keep)
    return {"dropped": len(drop), "dropped_lines": [lines[i] for i in drop],
            "dropped_min_loss": round(min(losses[i] for i in drop), 4) if drop else None,
            "kept_max_loss": round(max(losses[i] for i in keep), 4)}


def _phase_record(phase, trainer, result, seconds: float, trim: dict) -> dict:
    """What one phase was and did: its settings, pairs trained and dropped, steps, losses, final margins."""
    history = [trainer.state.log_history]
    losses = _logged(history, "loss")
    summary = _summary(history)
    return {"loss_type": phase.loss_type, "beta": phase.beta, "epochs": phase.epochs, "trim": phase.trim,
            "pairs": len(trainer.train_dataset), **trim, "steps": trainer.state.global_step,
            "train_loss": round(result.training_loss, 4),
            "first_loss": round(losses[0], 4) if losses else None,
            "last_loss": round(losses[-1], 4) if losses else None,
            **{key: summary[key] for key in ("final_rewards_margins", "final_rewards_accuracies")},
            "seconds": round(seconds, 1)}


def train_dpo(config: Config, pairs_file, output_dir, init_model: str) -> dict | None:
    """Train and save; under `accelerate launch` every process trains, the main one saves and returns
    the metrics, the others return None. The pairs file is read before any model is loaded."""
    from transformers import AutoTokenizer

    dpo = config.dpo
    rows, spec = read_pairs_file(pairs_file)
    state = training.process_state()
    training.no_hub_telemetry()
    tokenizer = from_pretrained(AutoTokenizer, init_model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset, too_long = build_pairs_dataset(tokenizer, rows, spec, dpo.max_length)
    precision = training.precision(config)
    model, quantized = training.load_trainable_model(config, init_model, state, precision)
    output_dir = Path(output_dir)
    work = training.work_dir(output_dir, state)
    phases, world = dpo.phases(), state.num_processes
    log(f"DPO on {len(dataset)} pairs ({too_long} over max_length skipped), {config.training_method}, "
        f"bf16={precision == torch.bfloat16}, from {init_model} (also the reference), {world} process(es), "
        f"global batch {dpo.train_batch_size} x {dpo.gradient_accumulation_steps} x {world}, {len(phases)} phase(s)")
    records, histories, loss_sums, finished, epochs_before = [], [], [], None, 0.0
    for i, phase in enumerate(phases):
        # phase 1 wraps the model in the LoRA adapter, the later ones continue it; epoch e of one long run
        # would shuffle with seed + e (accelerate's seedable sampler), and so do the phases' epochs
        trainer = _phase_trainer(config, phase, model, dataset, tokenizer, work, precision,
                                 training.lora_config(config) if i == 0 else None,
                                 data_seed=config.seed + math.ceil(epochs_before), output_dir=output_dir,
                                 phase_number=i + 1)
        trim = _trim(trainer, phase.trim, phase.beta) if phase.trim > 0 else {"dropped": 0, "dropped_lines": []}
        log(f"phase {i + 1}/{len(phases)}: {phase.loss_type}, beta {phase.beta}, {phase.epochs:g} epoch(s) on "
            f"{len(trainer.train_dataset)} pairs" + (f" (trim {phase.trim}: the {trim['dropped']} with the highest "
                                                     f"DPO loss dropped)" if phase.trim > 0 else ""))
        finished = training.run_trainer(trainer, state)
        model = trainer.accelerator.unwrap_model(trainer.model)
        epochs_before += phase.epochs
        if finished is not None:
            records.append(_phase_record(phase, trainer, *finished, trim))
            histories.append(trainer.state.log_history)
            loss_sums.append(finished[0].training_loss * trainer.state.global_step)
    if finished is None:
        return None
    result, seconds = finished
    steps = sum(r["steps"] for r in records)
    losses = _logged(histories, "loss")
    used = {phase.loss_type for phase in phases}
    metrics = {
        "pairs": len(dataset), "skipped_too_long": too_long,
        "loss_type": phases[0].loss_type if len(phases) == 1 else "schedule",
        "beta": phases[0].beta if len(phases) == 1 else None,
        **({"cal_weight": dpo.cal_weight} if "cal_dpo" in used else {}),
        **({"dr_beta": dpo.dr_beta} if "dr_dpo" in used else {}),
        **({"centre_ema": dpo.centre_ema} if "batch_centred" in used else {}),
        **training.common_metrics(config, result, trainer, seconds, quantized=quantized, processes=world,
                                  batch_size=dpo.train_batch_size, accumulation=dpo.gradient_accumulation_steps),
        # over every phase (common_metrics saw the last phase's trainer only)
        "train_loss": round(sum(loss_sums) / max(steps, 1), 4),
        "first_loss": round(losses[0], 4) if losses else None, "last_loss": round(losses[-1], 4) if losses else None,
        "steps": steps, "seconds": round(sum(r["seconds"] for r in records), 1),
        "loss_history": [round(x, 4) for x in losses],
        **_summary(histories),
        "phases": records,
        **({"phase_restarts": "each phase is a new trainer: optimizer state and LR schedule (with its warmup) "
                              "restart; the reference stays the init model"} if len(phases) > 1 else {}),
    }
    training.check_finite(metrics["train_loss"])
    training.save_checkpoint(trainer, tokenizer, work, output_dir, config=config, init_model=init_model, record={
        "prompt_spec": spec.to_dict() if spec else None, "init_model": init_model, "pairs_file": str(pairs_file),
        "metrics": metrics})
    log(f"saved {output_dir} (loss {metrics['first_loss']} -> {metrics['last_loss']}, reward margin "
        f"{metrics['final_rewards_margins']}, accuracy {metrics['final_rewards_accuracies']}, "
        f"{metrics['seconds']:.0f}s)")
    return metrics


def main(argv=None):
    args = parser().parse_args(argv)
    config = resolve_config(args, FLAGS)
    n = args.iteration
    if n < 1:
        raise InputError(f"--iteration {n}: training starts at iteration 1 (iteration 0 is the base model)")
    flat = [f"--{flag}" for flag in ("loss_type", "beta", "epochs") if getattr(args, flag) is not None]
    if config.dpo.schedule and flat:  # each phase has its own; the flags would do nothing
        raise InputError(f"{', '.join(flat)}: dpo.schedule sets each phase's loss_type, beta and epochs; "
                         f"change the schedule (--set dpo.schedule=[...]) instead")
    if args.pairs_file:
        pairs_file = Path(args.pairs_file)
    elif args.run_dir:
        pairs_file = finished_output(args.run_dir, n, "pairs")
    else:
        raise InputError("train_dpo: give --pairs_file, or --run_dir and --iteration")
    if not args.output_dir and not args.run_dir:
        raise InputError("train_dpo: give --output_dir, or --run_dir and --iteration")
    out = training.model_output(args.run_dir, n, args.output_dir, {"pairs": pairs_file})
    if out is None:
        return
    if args.init_model:
        init_model = args.init_model
    elif args.run_dir and n > 1:
        init_model = str(model_dir(args.run_dir, n - 1))  # M_{N-1}: the policy and the reference
    else:
        init_model = config.base_model_path
    metrics = train_dpo(config, pairs_file, out.path, init_model)
    if out.marker is not None and metrics is not None:  # the main process writes the marker
        out.finish(config, metrics, {"init_model": init_model, "pairs_file": str(pairs_file)})


if __name__ == "__main__":
    run(main)
