"""DPO, Cal-DPO and Dr-DPO: the loss arithmetic by hand, the trainer against TRL's stock DPOTrainer,
train_dpo.py's file contract on the tiny random Llama, and its bad-input errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from selftrain import dpo_losses
from selftrain.cli import run
from selftrain.config import DPO_LOSSES, Config, DPOSection, load_config, trl_dpo_loss_types
from selftrain.errors import InputError
from selftrain.stages import train_dpo

# policy / reference summed log-probs of 3 pairs; h_w = pc - rc, h_l = pr - rr
PC, PR, RC, RR = [-1.0, -2.0, -4.0], [-3.0, -1.5, -2.0], [-1.5, -2.5, -3.0], [-2.0, -1.0, -2.5]
H_W, H_L = [0.5, 0.5, -1.0], [-1.0, -0.5, 0.5]  # so delta = h_w - h_l = [1.5, 1.0, -1.5]


def tensors(*lists):
    return [torch.tensor(x, dtype=torch.float32) for x in lists]


def neg_logsigmoid(x: float) -> float:
    return math.log(1.0 + math.exp(-x))


def test_sigmoid_is_dpo_by_hand():
    out = dpo_losses.sigmoid(*tensors(PC, PR, RC, RR), beta=0.1)
    expected = [neg_logsigmoid(0.15), neg_logsigmoid(0.10), neg_logsigmoid(-0.15)]
    assert out.per_pair.tolist() == pytest.approx(expected, rel=1e-6)
    assert out.loss.item() == pytest.approx(sum(expected) / 3, rel=1e-6)


@pytest.mark.parametrize("cal_weight", [1.0, 0.5])
def test_cal_dpo_by_hand(cal_weight):
    # beta 0.1: targets +-1/(2 beta) = +-5; no beta inside the sigmoid
    out = dpo_losses.cal_dpo(*tensors(PC, PR, RC, RR), beta=0.1, cal_weight=cal_weight)
    bt = [neg_logsigmoid(1.5), neg_logsigmoid(1.0), neg_logsigmoid(-1.5)]
    calibration = [(0.5 - 5) ** 2 + (-1.0 + 5) ** 2,  # 20.25 + 16
                   (0.5 - 5) ** 2 + (-0.5 + 5) ** 2,  # 20.25 + 20.25
                   (-1.0 - 5) ** 2 + (0.5 + 5) ** 2]  # 36 + 30.25
    assert calibration == [36.25, 40.5, 66.25]
    expected = [b + cal_weight * c for b, c in zip(bt, calibration)]
    assert out.terms["bt"].tolist() == pytest.approx(bt, rel=1e-6)
    assert out.terms["calibration"].tolist() == pytest.approx(calibration, rel=1e-6)
    assert out.loss.item() == pytest.approx(sum(expected) / 3, rel=1e-6)


def test_dr_dpo_by_hand():
    beta = 0.1
    losses = [neg_logsigmoid(0.15), neg_logsigmoid(0.10), neg_logsigmoid(-0.15)]  # each pair's DPO loss
    out = dpo_losses.dr_dpo(*tensors(PC, PR, RC, RR), beta=beta, dr_beta=1.0)
    expected = -1.0 * math.log(sum(math.exp(-x / 1.0) for x in losses) / 3)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    # dr_beta 1: minus the log of the mean preference probability sigmoid(beta * delta)
    mean_sigmoid = sum(1 / (1 + math.exp(-beta * d)) for d in (1.5, 1.0, -1.5)) / 3
    assert out.loss.item() == pytest.approx(-math.log(mean_sigmoid), rel=1e-6)
    # the weights are softmax(-l / dr_beta): the high-loss (third) pair counts least
    weights = [math.exp(-x) / sum(math.exp(-y) for y in losses) for x in losses]
    assert out.terms["weight"].tolist() == pytest.approx(weights, rel=1e-6)
    half = dpo_losses.dr_dpo(*tensors(PC, PR, RC, RR), beta=beta, dr_beta=0.5)
    assert half.loss.item() == pytest.approx(-0.5 * math.log(sum(math.exp(-x / 0.5) for x in losses) / 3), rel=1e-6)


def test_dr_dpo_of_one_pair_is_dpo_and_a_large_dr_beta_is_the_mean():
    one = tensors(PC[:1], PR[:1], RC[:1], RR[:1])
    assert dpo_losses.dr_dpo(*one, beta=0.1, dr_beta=0.3).loss.item() == pytest.approx(
        dpo_losses.sigmoid(*one, beta=0.1).loss.item(), rel=1e-6)
    three = tensors(PC, PR, RC, RR)
    # mean(l) - var(l) / (2 dr_beta) + ...: ~2e-5 off at dr_beta 100 (float32 rounding grows with dr_beta)
    assert dpo_losses.dr_dpo(*three, beta=0.1, dr_beta=100.0).loss.item() == pytest.approx(
        dpo_losses.sigmoid(*three, beta=0.1).loss.item(), rel=1e-3)


def test_huge_losses_stay_finite_with_finite_gradients():
    # delta = -2e4 nats at beta 1: every pair's DPO loss is ~2e4, where exp(-l) underflows to 0
    pc = torch.tensor([-2e4, -3e4], requires_grad=True)
    pr = torch.tensor([0.0, 0.0])
    rc = torch.tensor([0.0, 0.0])
    rr = torch.tensor([0.0, 0.0])
    for name in dpo_losses.LOSSES:
        pc.grad = None
        out = dpo_losses.pair_loss(name, pc, pr, rc, rr, beta=1.0 if name != "cal_dpo" else 1e-3)
        out.loss.backward()
        assert torch.isfinite(out.loss) and torch.isfinite(pc.grad).all(), name
    naive = -torch.log(torch.mean(torch.exp(-dpo_losses.sigmoid(pc, pr, rc, rr, beta=1.0).per_pair)))
    assert torch.isinf(naive)  # the official log(mean(exp)) form
    assert dpo_losses.dr_dpo(pc, pr, rc, rr, beta=1.0).loss.item() == pytest.approx(2e4 + math.log(2), rel=1e-6)


def test_the_registry_the_config_and_trls_loss_types_agree():
    assert tuple(dpo_losses.LOSSES) == DPO_LOSSES
    trl_types = trl_dpo_loss_types()
    assert {"sigmoid", "hinge", "ipo", "robust", "sppo_hard"} <= set(trl_types)
    assert not {"cal_dpo", "dr_dpo"} & set(trl_types)  # neither is in TRL 1.16 (notes 1.5)
    for name in ("cal_dpo", "dr_dpo", "hinge", "ipo"):
        DPOSection(loss_type=name).validate("f.yaml")
    with pytest.raises(InputError, match=r"^f.yaml: dpo.loss_type: 'xyz' is not one of sigmoid, cal_dpo, dr_dpo, "
                                         r"hinge, ipo, "):
        DPOSection(loss_type="xyz").validate("f.yaml")
    with pytest.raises(InputError, match=r"^f.yaml: dpo.beta: 0.0 must be > 0$"):
        DPOSection(beta=0.0).validate("f.yaml")
    assert Config().dpo == DPOSection()
    assert load_config(None, {"dpo.loss_type": "cal_dpo", "dpo.beta": "0.01"}).dpo.beta == 0.01


# --- the trainer on the tiny model -------------------------------------------------------------

PAIRS = [{"prompt": f"Question: What is {a} + {b}?\nAnswer:", "chosen": f" {a + b}", "rejected": f" {a + b + 1}"}
         for a, b in ((1, 2), (3, 4), (5, 6), (7, 8))]


def trainer_of(cls, tmp_path, tiny_model_dir, tokenizer, **extra):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    args = DPOConfig(output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=4, beta=0.1, seed=0,
                     report_to="none", use_cpu=True, bf16=False, gradient_checkpointing=False, max_length=64)
    # random (not zero) B matrices: the policy differs from the reference, so the loss is not just log 2
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False,
                             task_type="CAUSAL_LM")
    return cls(model=model, args=args, train_dataset=Dataset.from_list(PAIRS), processing_class=tokenizer,
               peft_config=peft_config, **extra)


def one_batch(trainer):
    return trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))]))


def test_sigmoid_equals_stock_dpo_trainer(tmp_path, tiny_model_dir, tokenizer):
    from trl import DPOTrainer

    stock = trainer_of(DPOTrainer, tmp_path, tiny_model_dir, tokenizer)
    ours = trainer_of(train_dpo.dpo_trainer_class(), tmp_path, tiny_model_dir, tokenizer, loss_name="sigmoid")
    expected = stock.compute_loss(stock.model, one_batch(stock))
    got = ours.compute_loss(ours.model, one_batch(ours))
    assert abs(expected.item() - math.log(2)) > 1e-3  # the policy really differs from the reference
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)
    mode = "train" if ours.model.training else "eval"
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected"):
        assert ours._metrics[mode][key] == pytest.approx(stock._metrics[mode][key], abs=1e-5), key
    assert ours._metrics[mode]["beta"] == [0.1]


@pytest.mark.parametrize("name", ["cal_dpo", "dr_dpo"])
def test_the_trainer_loss_is_the_formula_on_plainly_computed_log_probs(tmp_path, tiny_model_dir, tokenizer, name):
    """The fused LM head through the PEFT wrapper against a plain forward + log_softmax, the adapter on
    (policy) and off (reference)."""
    from trl.trainer.utils import selective_log_softmax

    trainer = trainer_of(train_dpo.dpo_trainer_class(), tmp_path, tiny_model_dir, tokenizer, loss_name=name,
                         cal_weight=0.5, dr_beta=0.7)
    batch = one_batch(trainer)
    got = trainer.compute_loss(trainer.model, batch).item()

    def summed(model):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        per_token = selective_log_softmax(logits[:, :-1], batch["input_ids"][:, 1:])
        return (per_token * batch["completion_mask"][:, 1:]).sum(1).chunk(2)

    with torch.no_grad():
        pc, pr = summed(trainer.model)
        with trainer.model.disable_adapter():
            rc, rr = summed(trainer.model)
    assert (pc - rc).abs().max() > 1e-3  # the adapter changes the log-probs
    expected = dpo_losses.pair_loss(name, pc, pr, rc, rr, beta=0.1, cal_weight=0.5, dr_beta=0.7).loss.item()
    assert got == pytest.approx(expected, rel=1e-5)


# --- train_dpo.py: the file contract -----------------------------------------------------------

def write_pairs(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_config(path: Path, model_dir: str, **extra) -> Path:
    path.write_text(json.dumps({"base_model_path": model_dir, "dtype": "fp32", "lora_r": 4, "lora_alpha": 8,
                                "dpo": {"train_batch_size": 2, **extra}}))
    return path


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*"))}


def test_train_dpo_writes_the_checkpoint_and_marker_and_a_rerun_does_nothing(tmp_path, tiny_model_dir):
    config = write_config(tmp_path / "c.json", tiny_model_dir, loss_type="cal_dpo")
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    argv = ["--config", str(config), "--run_dir", str(tmp_path / "run"), "--pairs_file", str(pairs)]
    train_dpo.main(argv)
    it = tmp_path / "run" / "iter_01"
    model = it / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "selftrain_config.json"):
        assert (model / name).is_file(), name
    assert not (it / "model.partial").exists() and not (model / "trainer").exists()
    saved = json.loads((model / "selftrain_config.json").read_text())
    assert saved["init_model"] == tiny_model_dir and saved["pairs_file"] == str(pairs)
    assert saved["prompt_spec"] is None and saved["config"]["dpo"]["loss_type"] == "cal_dpo"

    marker = json.loads((it / "model.done").read_text())
    metrics = marker["metrics"]
    assert marker["output"] == "model" and marker["init_model"] == tiny_model_dir
    assert (metrics["pairs"], metrics["steps"], metrics["loss_type"], metrics["beta"], metrics["cal_weight"]) == (
        4, 2, "cal_dpo", 0.1, 1.0)
    assert len(metrics["loss_history"]) == 2 and math.isfinite(metrics["train_loss"])
    for key in ("final_rewards_margins", "mean_rewards_margins", "final_rewards_accuracies",
                "mean_rewards_accuracies", "first_logps_chosen", "last_logps_chosen", "peak_rss_gib", "seconds"):
        assert isinstance(metrics[key], float), key

    before = snapshot(tmp_path / "run")
    train_dpo.main(argv)
    assert snapshot(tmp_path / "run") == before


def test_a_trl_loss_type_runs_trls_own_loss(tmp_path, tiny_model_dir):
    config = load_config(write_config(tmp_path / "c.json", tiny_model_dir, loss_type="hinge"))
    metrics = train_dpo.train_dpo(config, write_pairs(tmp_path / "pairs.jsonl", PAIRS), tmp_path / "model",
                                  tiny_model_dir)
    assert metrics["loss_type"] == "hinge" and metrics["first_loss"] == pytest.approx(1.0, abs=1e-3)  # relu(1 - 0)
    assert metrics["final_rewards_margins"] is not None  # TRL's own metrics, same names
    assert (tmp_path / "model" / "adapter" / "adapter_config.json").is_file()


def test_a_run_takes_its_pairs_stage_and_the_previous_model(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(train_dpo, "train_dpo", lambda config, pairs, out, init: seen.update(
        pairs=pairs, out=out, init=init))
    run_dir = tmp_path / "run"
    (run_dir / "iter_02").mkdir(parents=True)
    (run_dir / "iter_02" / "pairs_x.jsonl").write_text("")
    (run_dir / "iter_02" / "pairs.done").write_text(json.dumps({"output": "pairs_x.jsonl"}))
    train_dpo.main(["--run_dir", str(run_dir), "--iteration", "2"])
    assert seen == {"pairs": run_dir / "iter_02" / "pairs_x.jsonl", "out": run_dir / "iter_02" / "model",
                    "init": str(run_dir / "iter_01" / "model")}


# --- bad input: one line naming file:line:field, exit 2, before any model load, nothing written -----

def error_of(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        run(train_dpo.main, argv)
    assert exc.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("change, field, what", [
    ({"chosen": None}, "chosen", "missing or empty"),
    ({"chosen": "  "}, "chosen", "missing or empty"),
    ({"rejected": ""}, "rejected", "missing or empty"),
    ({"prompt": None}, "prompt", "missing or empty"),
    ({"rejected": " 3"}, "rejected", "the same text as chosen (no preference to learn)"),
    ({"prompt": [{"role": "user", "content": "hi"}]}, "prompt", "expected a string"),
])
def test_bad_pairs_stop_before_any_model_load(tmp_path, capsys, monkeypatch, tiny_model_dir, change, field, what):
    from selftrain import training

    monkeypatch.setattr(training, "load_trainable_model", lambda *a, **k: pytest.fail("a model was loaded"))
    rows = [dict(r) for r in PAIRS]
    rows[1] = {k: v for k, v in {**rows[1], **change}.items() if v is not None}
    if field == "rejected" and "same" in what:
        rows[1]["chosen"] = " 3"
    pairs = write_pairs(tmp_path / "pairs.jsonl", rows)
    line = error_of(capsys, ["--config", str(write_config(tmp_path / "c.json", tiny_model_dir)),
                             "--run_dir", str(tmp_path / "run"), "--pairs_file", str(pairs)])
    assert line.startswith(f"error: {pairs}:2: {field}: {what}"), line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags", [["--loss_type", "xyz"], ["--set", "dpo.loss_type=xyz"]])
def test_an_unknown_loss_type_stops_with_the_allowed_ones(tmp_path, capsys, tiny_model_dir, flags):
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    line = error_of(capsys, ["--config", str(write_config(tmp_path / "c.json", tiny_model_dir)), *flags,
                             "--run_dir", str(tmp_path / "run"), "--pairs_file", str(pairs)])
    assert line.startswith(f"error: {tmp_path / 'c.json'}: dpo.loss_type: 'xyz' is not one of sigmoid, cal_dpo, "
                           f"dr_dpo, hinge, ipo"), line
    assert not (tmp_path / "run").exists()
