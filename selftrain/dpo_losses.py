"""Preference losses on summed completion log-probabilities: DPO, Cal-DPO, Dr-DPO.

Pure tensor functions (no TRL): each takes the policy's and the reference's
log-probabilities of the chosen and rejected completions, summed over the
completion tokens, shape (B,), and returns a `PairLoss`: the scalar loss of
the micro-batch and the per-pair terms it is made of. With
`h_w = policy_chosen - ref_chosen`, `h_l = policy_rejected - ref_rejected` and
`delta = h_w - h_l`:

- `sigmoid` (DPO, Rafailov et al. 2023): mean_i -log sigmoid(beta * delta_i).
- `cal_dpo` (Cal-DPO, Xiao et al. 2024):
  mean_i [-log sigmoid(delta_i) + cal_weight * ((h_w - 1/(2 beta))^2 + (h_l + 1/(2 beta))^2)].
  beta is not inside the sigmoid: it only sets the calibration targets +-1/(2 beta),
  which pull the chosen log-ratio up and the rejected one down in absolute terms
  (DPO only widens their gap, and often lowers the chosen likelihood with it).
  cal_weight 1.0 is the paper's objective as written and what the Cal-DPO
  organisation's code uses (Cal-DPO/Cal-DPO: Pythia-2.8b-exp/trainers.py and
  Mistral-7b-exp DPO_REG add the two squared errors with weight 1).
  tengxiao1/Cal-DPO (scripts/dpo_trainer.py) adds `0.5 * (mse(h_w) + mse(h_l))`,
  i.e. cal_weight 0.5; set `dpo.cal_weight: 0.5` to reproduce that code base.
- `dr_dpo` (Dr-DPO, Wu et al. 2024): -dr_beta * log((1/n) sum_i exp(-l_i / dr_beta)),
  l_i the pair's DPO loss. The gradient weights pair i by softmax_i(-l_i / dr_beta),
  so pairs the model strongly disagrees with (likely mislabelled) count less;
  dr_beta -> infinity is DPO's mean, dr_beta -> 0 the minimum; n = 1 is DPO.
  As in junkangwu/Dr_DPO, n is the micro-batch (per-device batch size changes
  the loss). Written with logsumexp: the official log(mean(exp)) underflows to
  -inf when every l_i / dr_beta is large.

The arithmetic runs in float32 whatever the model's dtype: Cal-DPO's squared
errors reach 1/(2 beta)^2 (2.5e5 at beta 0.001), past bf16's 8-bit mantissa.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F


class PairLoss(NamedTuple):
    loss: torch.Tensor  # scalar: the micro-batch loss to backpropagate
    per_pair: torch.Tensor  # (B,): each pair's own loss term (Dr-DPO: the DPO loss l_i it aggregates)
    terms: dict[str, torch.Tensor]  # (B,) components, e.g. Cal-DPO's "bt" and "calibration", Dr-DPO's "weight"


def log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected) -> tuple[torch.Tensor, torch.Tensor]:
    """(h_w, h_l): how much more likely the policy makes each completion than the reference, in nats."""
    return (policy_chosen.float() - ref_chosen.float(), policy_rejected.float() - ref_rejected.float())


def sigmoid(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta: float) -> PairLoss:
    h_w, h_l = log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    per_pair = -F.logsigmoid(beta * (h_w - h_l))
    return PairLoss(per_pair.mean(), per_pair, {})


def cal_dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta: float,
            cal_weight: float = 1.0) -> PairLoss:
    h_w, h_l = log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    target = 1.0 / (2.0 * beta)
    bt = -F.logsigmoid(h_w - h_l)  # Bradley-Terry term: no beta, as in the paper and both official codes
    calibration = (h_w - target) ** 2 + (h_l + target) ** 2
    per_pair = bt + cal_weight * calibration
    return PairLoss(per_pair.mean(), per_pair, {"bt": bt, "calibration": calibration})


def dr_dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta: float,
           dr_beta: float = 1.0) -> PairLoss:
    h_w, h_l = log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    per_pair = -F.logsigmoid(beta * (h_w - h_l))
    scaled = -per_pair / dr_beta
    loss = -dr_beta * (torch.logsumexp(scaled, dim=0) - math.log(per_pair.numel()))
    return PairLoss(loss, per_pair, {"weight": torch.softmax(scaled.detach(), dim=0)})


LOSSES: dict[str, Callable[..., PairLoss]] = {"sigmoid": sigmoid, "cal_dpo": cal_dpo, "dr_dpo": dr_dpo}


def pair_loss(name: str, policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta: float,
              cal_weight: float = 1.0, dr_beta: float = 1.0) -> PairLoss:
    """The loss `name` of LOSSES, given every knob; each loss takes the ones it uses."""
    extra = {"cal_dpo": {"cal_weight": cal_weight}, "dr_dpo": {"dr_beta": dr_beta}}.get(name, {})
    return LOSSES[name](policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=beta, **extra)
