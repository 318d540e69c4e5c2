"""DPO-loss benchmark: what DPO, Cal-DPO and Dr-DPO do to the embedded model at LoRA learning rates.

Each variant runs train_dpo.py's trainer (`stages.train_dpo.train_dpo`, LoRA
from the base model, which is also the reference) on the same synthetic
pairs of the demo task: the prompt as the demo renders it, `chosen` a short
correct reply, `rejected` the same reply with a wrong answer. Before and after,
the summed log-probability of every chosen and rejected reply is measured
under the base and the trained (merged) model, so the table shows what the
training did to the whole set, not only what the last batch logged:

    dlogp chosen / rejected  mean change of log p(reply) over all pairs, nats
                             (= the log-ratios h_w, h_l after training)
    pref acc                 share of pairs with h_w > h_l after training
    target                   Cal-DPO's calibration target +-1/(2 beta) for h_w / h_l

Cal-DPO's targets grow as 1/beta (5, 50, 500 nats at beta 0.1, 0.01, 0.001),
which a few LoRA steps cannot reach: its squared error then dominates the loss
(5e+05 at beta 0.001). That scale does not blow the training up: the gradient
is clipped to norm 1 (TrainingArguments' max_grad_norm) and Adam normalises
each parameter's step. While |h| << 1/(2 beta) the calibration gradient is
about -(1/beta) grad(h_w - h_l), DPO's direction, so a small-beta Cal-DPO
trains like DPO without the sigmoid's saturation; only at beta ~0.1, where the
targets are within reach, does it move differently.

    .venv/bin/python bench/bench_dpo_losses.py [--pairs 16] [--epochs 1] [--lr 5e-5] [--batch_size 4]
        [--variants cal_dpo:0.1,cal_dpo:0.01,cal_dpo:0.001,sigmoid:0.1,dr_dpo:0.1]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from selftrain.config import DPO_LOSSES, load_config  # noqa: E402
from selftrain.data import load_train_prompts  # noqa: E402
from selftrain.models import cpu_kind, load_tokenizer  # noqa: E402
from selftrain.prompts import PromptSpec, render_prompt  # noqa: E402

DEFAULT_VARIANTS = "cal_dpo:0.1,cal_dpo:0.01,cal_dpo:0.001,sigmoid:0.1,dr_dpo:0.1"


def variants_of(text: str) -> list[tuple[str, float]]:
    out = []
    for item in text.split(","):
        name, _, beta = item.partition(":")
        if name not in DPO_LOSSES or not beta:
            raise SystemExit(f"variant {item!r}: expected <loss>:<beta> with loss one of {', '.join(DPO_LOSSES)}")
        out.append((name, float(beta)))
    return out


def synthetic_pairs(config, tokenizer, spec: PromptSpec, n: int) -> list[dict]:
    """Demo-task prompts; chosen: `a + b = c.\\nAnswer: c`; rejected: the same with c off by 1 or 10."""
    pairs = []
    for i, record in enumerate(load_train_prompts(config, 1)[:n]):
        answer = int(record["metadata"]["expected_answer"])
        question = record["prompt"].removeprefix("What is ").removesuffix("?")
        wrong = answer + (1, -1, 10, -10)[i % 4]
        pairs.append({"prompt": render_prompt(tokenizer, record, spec),
                      "chosen": f"{question} = {answer}.\nAnswer: {answer}",
                      "rejected": f"{question} = {wrong}.\nAnswer: {wrong}", "prompt_spec": spec.to_dict()})
    return pairs


@torch.no_grad()
def reply_logps(model_dir: str, tokenizer, pairs: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log p(reply + EOS | prompt) of each chosen and rejected reply, in fp32, tokenized as TRL does."""
    from transformers import AutoModelForCausalLM

    from selftrain.models import from_pretrained

    model = from_pretrained(AutoModelForCausalLM, model_dir, dtype=torch.float32).eval()
    result = {"chosen": [], "rejected": []}
    for pair in pairs:
        start = len(tokenizer(pair["prompt"])["input_ids"])
        for key in result:
            ids = torch.tensor([tokenizer(pair["prompt"] + pair[key] + tokenizer.eos_token)["input_ids"]])
            logprobs = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
            targets = ids[0, 1:]
            result[key].append(logprobs[start - 1:].gather(1, targets[start - 1:, None]).sum().item())
    return torch.tensor(result["chosen"]), torch.tensor(result["rejected"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help="<loss>:<beta>,... (default: %(default)s)")
    args = p.parse_args()
    variants = variants_of(args.variants)
    from selftrain.stages.train_dpo import train_dpo

    base_config = load_config("configs/demo.yaml", {"task.n_train": args.pairs})
    tokenizer = load_tokenizer(base_config.base_model_path)
    spec = PromptSpec.from_config(base_config)
    pairs = synthetic_pairs(base_config, tokenizer, spec, args.pairs)
    before_chosen, before_rejected = reply_logps(base_config.base_model_path, tokenizer, pairs)
    print(f"CPU kind {cpu_kind()} ({torch.get_num_threads()} threads), dtype {base_config.dtype}, {len(pairs)} pairs, "
          f"batch {args.batch_size}, {args.epochs} epoch(s), lr {args.lr}, LoRA r={base_config.lora_r}; base model: "
          f"mean log p(chosen) {before_chosen.mean():.2f}, log p(rejected) {before_rejected.mean():.2f}, "
          f"prefers chosen on {(before_chosen > before_rejected).float().mean():.0%}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        pairs_file = work / "pairs.jsonl"
        pairs_file.write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
        for name, beta in variants:
            config = load_config("configs/demo.yaml", {
                "task.n_train": args.pairs, "dpo.loss_type": name, "dpo.beta": beta, "dpo.learning_rate": args.lr,
                "dpo.num_train_epochs": args.epochs, "dpo.train_batch_size": args.batch_size})
            out = work / f"{name}_{beta}"
            metrics = train_dpo(config, pairs_file, out, config.base_model_path)
            chosen, rejected = reply_logps(str(out), tokenizer, pairs)
            h_w, h_l = chosen - before_chosen, rejected - before_rejected
            rows.append({
                "loss": name, "beta": beta, "target": f"+-{1 / (2 * beta):g}" if name == "cal_dpo" else "-",
                "steps": metrics["steps"], "loss first -> last": f"{metrics['first_loss']:.4g} -> {metrics['last_loss']:.4g}",
                "logged margin (last)": f"{metrics['final_rewards_margins']:.4f}",
                "logged acc (last)": f"{metrics['final_rewards_accuracies']:.2f}",
                "dlogp chosen": f"{h_w.mean():+.3f}", "dlogp rejected": f"{h_l.mean():+.3f}",
                "dlogp margin": f"{(h_w - h_l).mean():+.3f}", "pref acc": f"{((h_w - h_l) > 0).float().mean():.2f}",
                "chosen up": f"{(h_w > 0).float().mean():.2f}", "seconds": metrics["seconds"]})
            print(json.dumps(rows[-1]), flush=True)
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
