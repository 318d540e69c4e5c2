"""DPO, Cal-DPO, Dr-DPO and batch-centred DPO: the loss arithmetic by hand, the whole-set trim, the
schedule's config, the trainer against TRL's stock DPOTrainer, train_dpo.py's file contract (one phase
and a schedule) on the tiny random Llama, and its bad-input errors."""
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

from checkpoints import check_lora_moved_the_weights  # tests/ is on sys.path (pytest prepends a test file's folder)

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


def test_batch_centred_by_hand():
    # delta = [1.5, 1.0, -1.5]: mu = 1/3, centred margins [7/6, 2/3, -11/6]
    mu = 1.0 / 3
    out = dpo_losses.batch_centred(*tensors(PC, PR, RC, RR), beta=0.1)
    expected = [neg_logsigmoid(0.1 * (d - mu)) for d in (1.5, 1.0, -1.5)]
    assert out.per_pair.tolist() == pytest.approx(expected, rel=1e-6)
    assert out.loss.item() == pytest.approx(sum(expected) / 3, rel=1e-6)
    assert out.terms["centre"].tolist() == pytest.approx([mu] * 3, rel=1e-6)
    assert out.terms["dpo"].tolist() == pytest.approx([neg_logsigmoid(0.1 * d) for d in (1.5, 1.0, -1.5)], rel=1e-6)
    # the running mean: gamma 0.9 after a mu of 2.0 -> 0.9 * 2 + 0.1 * (1/3) = 1.8333...
    ema = dpo_losses.batch_centred(*tensors(PC, PR, RC, RR), beta=0.1, centre_ema=0.9, running_centre=2.0)
    assert ema.terms["centre"][0].item() == pytest.approx(1.8 + 0.1 * mu, rel=1e-6)
    assert ema.loss.item() == pytest.approx(
        sum(neg_logsigmoid(0.1 * (d - 1.8 - 0.1 * mu)) for d in (1.5, 1.0, -1.5)) / 3, rel=1e-6)
    # first step (no running mean yet), or gamma 0: the batch's own mean
    for kwargs in ({"centre_ema": 0.9, "running_centre": None}, {"centre_ema": 0.0, "running_centre": 2.0}):
        assert dpo_losses.batch_centred(*tensors(PC, PR, RC, RR), beta=0.1, **kwargs).loss.item() == pytest.approx(
            out.loss.item(), rel=1e-6)


@pytest.mark.parametrize("delta", [-30.0, 0.0, 0.7, 500.0])
def test_batch_centred_of_one_pair_is_log_2_with_a_constant_gradient(delta):
    pc = torch.tensor([delta - 4.0], requires_grad=True)
    pr = torch.tensor([-4.0], requires_grad=True)
    out = dpo_losses.batch_centred(pc, pr, torch.zeros(1), torch.zeros(1), beta=0.1)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(math.log(2), rel=1e-6)
    # d/d delta of -log sigmoid(beta (delta - mu)) at delta = mu, mu detached: -beta sigmoid(0) = -beta / 2
    assert pc.grad.item() == pytest.approx(-0.05, rel=1e-6) and pr.grad.item() == pytest.approx(0.05, rel=1e-6)


def test_batch_centred_passes_no_gradient_through_the_batch_mean():
    """Raising every margin by the same c leaves the centred margins unchanged; with mu detached the
    loss still has d/dc = -(beta / B) sum_i sigmoid(-beta (delta_i - mu)) < 0 (every margin is pushed
    up), where a mu with a gradient gives exactly 0."""
    beta, mu = 0.1, 1.0 / 3
    shift = torch.zeros((), requires_grad=True)
    pc, pr, rc, rr = tensors(PC, PR, RC, RR)
    pc = pc.clone().requires_grad_(True)
    dpo_losses.batch_centred(pc + shift, pr, rc, rr, beta=beta).loss.backward()
    weights = [1 / (1 + math.exp(beta * (d - mu))) for d in (1.5, 1.0, -1.5)]  # sigmoid(-beta (delta_i - mu))
    assert shift.grad.item() == pytest.approx(-beta / 3 * sum(weights), rel=1e-6)
    assert pc.grad.tolist() == pytest.approx([-beta / 3 * w for w in weights], rel=1e-6)  # no -1/B sum term
    attached = torch.zeros((), requires_grad=True)
    delta = (pc.detach() + attached) - pr - rc + rr
    (-torch.nn.functional.logsigmoid(beta * (delta - delta.mean()))).mean().backward()
    assert attached.grad.item() == pytest.approx(0.0, abs=1e-7)  # float32 rounding only


def test_trim_indices_drops_the_floor_of_the_share_with_the_highest_losses():
    losses = [0.1 * ((7 * i) % 20) for i in range(20)]  # 20 distinct losses, a permutation of 0.0 .. 1.9
    top3 = sorted(sorted(range(20), key=lambda i: -losses[i])[:3])
    assert dpo_losses.trim_indices(losses, 0.15) == top3  # floor(0.15 * 20) = 3
    assert sorted(losses[i] for i in top3) == pytest.approx([1.7, 1.8, 1.9])
    assert dpo_losses.trim_indices(torch.tensor(losses), 0.15) == top3
    assert len(dpo_losses.trim_indices(losses[:19], 0.15)) == 2  # 2.85 -> 2
    assert dpo_losses.trim_indices([0.3, 0.9], 0.15) == []  # a micro-batch of 2: 0.3 -> nothing
    assert dpo_losses.trim_indices(losses, 0.0) == []
    assert dpo_losses.trim_indices([1.0, 1.0, 1.0, 0.0], 0.5) == [0, 1]  # ties: the earlier pairs
    assert dpo_losses.trim_count(100, 0.29) == 29  # 0.29 * 100 is 28.999999999999996 in floats
    with pytest.raises(ValueError, match="must be in"):
        dpo_losses.trim_indices(losses, 1.0)


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
    assert not {"cal_dpo", "dr_dpo", "batch_centred"} & set(trl_types)  # none is in TRL 1.16 (notes 1.5)
    for name in ("cal_dpo", "dr_dpo", "batch_centred", "hinge", "ipo"):
        DPOSection(loss_type=name).validate("f.yaml")
    with pytest.raises(InputError, match=r"^f.yaml: dpo.loss_type: 'xyz' is not one of sigmoid, cal_dpo, dr_dpo, "
                                         r"batch_centred, hinge, ipo, "):
        DPOSection(loss_type="xyz").validate("f.yaml")
    with pytest.raises(InputError, match=r"^f.yaml: dpo.beta: 0.0 must be > 0$"):
        DPOSection(beta=0.0).validate("f.yaml")
    assert Config().dpo == DPOSection()
    assert load_config(None, {"dpo.loss_type": "cal_dpo", "dpo.beta": "0.01"}).dpo.beta == 0.01


SEED_SCHEDULE = """dpo:
  # seed 003, Phase C: epoch 1 plain DPO, epochs 2-3 batch-centred, epoch 4 without the top 15% by DPO loss
  schedule: [{epochs: 1, beta: 0.05, loss_type: sigmoid}, {epochs: 2, beta: 0.1, loss_type: batch_centred},
             {epochs: 1, beta: 0.1, loss_type: sigmoid, trim: 0.15}]
"""


def test_the_seed_schedule_parses_and_an_empty_one_is_the_flat_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(SEED_SCHEDULE)
    dpo = load_config(path).dpo
    Phase = DPOSection.Phase
    assert dpo.phases() == [Phase(1.0, 0.05, "sigmoid"), Phase(2.0, 0.1, "batch_centred"),
                            Phase(1.0, 0.1, "sigmoid", trim=0.15)]
    assert load_config(None, {"dpo": load_config(path).to_dict()["dpo"]}).dpo == dpo  # the saved config reloads
    flat = load_config(None, {"dpo.loss_type": "cal_dpo", "dpo.beta": 0.2, "dpo.num_train_epochs": 3}).dpo
    assert flat.schedule == [] and flat.phases() == [Phase(3.0, 0.2, "cal_dpo", trim=0.0)]


GOOD_PHASE = {"epochs": 1, "beta": 0.1, "loss_type": "sigmoid"}


@pytest.mark.parametrize("schedule, message", [
    ([{"epochs": 1, "beta": 0.1}], "dpo.schedule[0].loss_type: missing (each phase gives its own epochs, beta and "
                                   "loss_type)"),
    ([GOOD_PHASE, {**GOOD_PHASE, "loss_type": "cal"}],
     "dpo.schedule[1].loss_type: 'cal' is not one of sigmoid, cal_dpo, dr_dpo, batch_centred, hinge"),
    ([{"epochs": 1, "loss_type": "sigmoid"}], "dpo.schedule[0].beta: 0.0 must be > 0 (each phase gives"),
    ([{**GOOD_PHASE, "epochs": -1}], "dpo.schedule[0].epochs: -1.0 must be > 0"),
    ([{**GOOD_PHASE, "trim": 1}], "dpo.schedule[0].trim: 1.0 must be in [0, 1)"),
    ([GOOD_PHASE, GOOD_PHASE, {**GOOD_PHASE, "trim": -0.1}], "dpo.schedule[2].trim: -0.1 must be in [0, 1)"),
    ([{**GOOD_PHASE, "betta": 0.1}], "unknown key 'dpo.schedule[0].betta' (did you mean 'dpo.schedule[0].beta'?)"),
    ([{**GOOD_PHASE, "beta": "high"}], "dpo.schedule[0].beta: expected a number, got 'high'"),
    ([{**GOOD_PHASE, "loss_type": "exo_pair"}], "dpo.label_smoothing: exo_pair needs it > 0"),
    (GOOD_PHASE, "dpo.schedule: expected a list"),
])
def test_bad_schedules_name_the_phase_and_key(schedule, message):
    with pytest.raises(InputError) as exc:
        load_config(None, {"dpo.schedule": schedule})
    assert str(exc.value).startswith(f"config: {message}"), str(exc.value)


def test_centre_ema_must_be_below_1():
    with pytest.raises(InputError, match=r"^config: dpo.centre_ema: 1.0 must be in \[0, 1\)$"):
        load_config(None, {"dpo.centre_ema": 1})


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


@pytest.mark.parametrize("name", ["cal_dpo", "dr_dpo", "batch_centred"])
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


def test_the_running_centre_lives_on_the_trainer_and_moves_only_in_training(tmp_path, tiny_model_dir, tokenizer):
    trainer = trainer_of(train_dpo.dpo_trainer_class(), tmp_path, tiny_model_dir, tokenizer,
                         loss_name="batch_centred", centre_ema=0.5)
    batch = one_batch(trainer)
    halves = [{k: torch.cat([v[i:i + 2], v[4 + i:4 + i + 2]]) for k, v in batch.items()} for i in (0, 2)]
    means = []
    with torch.no_grad():
        for half in halves:
            pc, pr = trainer.completion_log_probs(trainer.model, half)
            rc, rr = trainer.reference_log_probs(trainer.model, half)
            means.append(((pc - rc) - (pr - rr)).mean().item())
    assert abs(means[0] - means[1]) > 1e-4
    trainer.model.eval()
    trainer.compute_loss(trainer.model, halves[0])
    assert trainer.running_centre is None  # an evaluation step leaves it alone
    trainer.model.train()
    trainer.compute_loss(trainer.model, halves[0])
    assert trainer.running_centre == pytest.approx(means[0], rel=1e-5)
    trainer.compute_loss(trainer.model, halves[1])
    assert trainer.running_centre == pytest.approx(0.5 * means[0] + 0.5 * means[1], rel=1e-5)
    assert trainer._metrics["train"]["batch_centred/centre"][-1] == pytest.approx(trainer.running_centre, rel=1e-5)


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
    check_lora_moved_the_weights(tiny_model_dir, model)  # trained: not the initial model saved again

    before = snapshot(tmp_path / "run")
    train_dpo.main(argv)
    assert snapshot(tmp_path / "run") == before


def summed_log_probs(model, input_ids, attention_mask, completion_mask) -> torch.Tensor:
    """Each row's log-probability of its completion tokens: a plain forward and log_softmax."""
    from trl.trainer.utils import selective_log_softmax

    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return (selective_log_softmax(logits[:, :-1], input_ids[:, 1:]) * completion_mask[:, 1:]).sum(1)


def test_a_schedule_trains_its_phases_against_the_init_model_and_trims_the_whole_set(
        tmp_path, tiny_model_dir, tokenizer, monkeypatch):
    """Phase 1: DPO at beta 0.05 on 10 pairs; phase 2: batch-centred at 0.1 without the 2 (floor(0.2 * 10))
    pairs of highest DPO loss under phase 1's policy. Phase 2's reference log-probs (its scoring pass and its
    training steps) are the init checkpoint's, although the policy entering phase 2 is not the init model."""
    from transformers import AutoModelForCausalLM

    seen = {"ref": [], "policy": [], "scores": []}
    plain = train_dpo.dpo_trainer_class

    def spying():
        class Spy(plain()):
            def compute_ref_log_probs(self, model, inputs):
                out = super().compute_ref_log_probs(model, inputs)
                keep = {k: inputs[k].detach().clone() for k in ("input_ids", "attention_mask", "completion_mask")}
                seen["ref"].append((self.beta, self.model.training, keep, torch.cat(out).detach().clone()))
                return out

            def completion_log_probs(self, model, inputs):
                out = super().completion_log_probs(model, inputs)
                if not self.model.training:  # the trim's scoring pass
                    seen["policy"].append(torch.cat(out).detach().clone())
                return out

            def pair_dpo_losses(self, beta):
                seen["scores"] = super().pair_dpo_losses(beta)
                return seen["scores"]
        return Spy

    monkeypatch.setattr(train_dpo, "dpo_trainer_class", spying)
    pairs = [{"prompt": f"Question: What is {a} + {a + 1}?\nAnswer:", "chosen": f" {2 * a + 1}",
              "rejected": f" {2 * a + 2}"} for a in range(10)]
    schedule = [{"epochs": 1, "beta": 0.05, "loss_type": "sigmoid"},
                {"epochs": 1, "beta": 0.1, "loss_type": "batch_centred", "trim": 0.2}]
    config = write_config(tmp_path / "c.json", tiny_model_dir, schedule=schedule, learning_rate=0.01)
    argv = ["--config", str(config), "--run_dir", str(tmp_path / "run"),
            "--pairs_file", str(write_pairs(tmp_path / "pairs.jsonl", pairs))]
    train_dpo.main(argv)
    it = tmp_path / "run" / "iter_01"
    metrics = json.loads((it / "model.done").read_text())["metrics"]
    assert json.loads((it / "model" / "selftrain_config.json").read_text())["metrics"]["phases"] == metrics["phases"]
    first, second = metrics["phases"]
    assert (first["loss_type"], first["beta"], first["epochs"], first["trim"], first["pairs"], first["dropped"],
            first["dropped_lines"], first["steps"]) == ("sigmoid", 0.05, 1.0, 0.0, 10, 0, [], 5)
    assert (second["loss_type"], second["beta"], second["trim"], second["pairs"], second["dropped"],
            second["steps"]) == ("batch_centred", 0.1, 0.2, 8, 2, 4)
    scores = seen["scores"]
    assert len(scores) == 10  # the whole set, not a batch of 2 (floor(0.2 * 2) = 0)
    highest = sorted(range(10), key=lambda i: -scores[i])[:2]
    assert second["dropped_lines"] == sorted(i + 1 for i in highest)  # line = pair number: no blank lines
    assert second["dropped_min_loss"] == pytest.approx(min(scores[i] for i in highest), abs=1e-4)
    assert second["kept_max_loss"] <= second["dropped_min_loss"]
    for record in (first, second):
        for key in ("first_loss", "last_loss", "final_rewards_margins", "train_loss"):
            assert isinstance(record[key], float), key
    assert (metrics["loss_type"], metrics["beta"], metrics["steps"], metrics["pairs"]) == ("schedule", None, 9, 10)
    assert len(metrics["loss_history"]) == 9 and metrics["centre_ema"] == 0.0 and "phase_restarts" in metrics

    # phase 2 trains on the kept pairs only
    trained = {tokenizer.decode(r["input_ids"][0]) for beta, training, r, _ in seen["ref"] if beta == 0.1 and training}
    dropped_prompts = [pairs[line - 1]["prompt"] for line in second["dropped_lines"]]
    assert trained and not any(p in text for p in dropped_prompts for text in trained)

    # every reference log-prob of phase 2 is the init checkpoint's
    init = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    phase2 = [(r, logps) for beta, _, r, logps in seen["ref"] if beta == 0.1]
    assert len(phase2) == 5 + 4  # the scoring pass (10 pairs in batches of 2) and 4 training steps
    for r, logps in phase2:
        assert torch.allclose(logps, summed_log_probs(init, **r), atol=1e-4)
    # ... while the policy that phase 2 started from (the scoring pass's) is phase 1's, not the init model
    scoring = [r for beta, training, r, _ in seen["ref"] if beta == 0.1 and not training]
    moved = max((p - summed_log_probs(init, **r)).abs().max().item() for p, r in zip(seen["policy"], scoring))
    assert moved > 1e-2


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
                           f"dr_dpo, batch_centred, hinge, ipo"), line
    assert not (tmp_path / "run").exists()
