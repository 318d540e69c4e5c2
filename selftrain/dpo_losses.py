"""Preference losses on summed completion log-probabilities: DPO, Cal-DPO, Dr-DPO, batch-centred DPO.

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
- `batch_centred` (seed 003's "Cal-DPO: subtract the batch-mean log gap mu each
  step"; it is not Cal-DPO, which has absolute targets and no centring):
  mean_i -log sigmoid(beta * (delta_i - mu)), mu the mean of delta over the
  micro-batch, detached, or with `centre_ema` gamma > 0 a running mean
  mu_t = gamma mu_{t-1} + (1 - gamma) mean(delta) (beta-DPO's gap_mean, gamma 0.9
  there). Detached, mu shifts the sigmoid but passes no gradient, so every margin
  is still pushed up; with a gradient through it the loss would not change when
  all margins rise together. The centred margins average 0, so the pair weights
  stay near sigmoid(0) and never saturate as DPO's do. A micro-batch of 1 without
  the running mean is the constant log 2 with a constant gradient -beta / 2.

`trim_indices` is seed 003's "drop the top 15% noisy pairs by disagreement": a
hard trim of the highest-loss pairs, applied to the whole pair set before a
phase (stages/train_dpo.py), not Dr-DPO's soft reweighting.

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
    terms: dict[str, torch.Tensor]  # (B,) components, e.g. Cal-DPO's "bt" and "calibration", Dr-DPO's "weight",
    #                                 batch_centred's "centre" (mu, repeated) and "dpo" (the uncentred DPO loss)


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


def batch_centred(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta: float,
                  centre_ema: float = 0.0, running_centre: float | None = None) -> PairLoss:
    """`running_centre`: the previous step's mu (None on the first step); the mu used is terms["centre"]."""
    h_w, h_l = log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    delta = h_w - h_l
    centre = delta.detach().mean()
    if running_centre is not None and centre_ema > 0:
        centre = centre_ema * running_centre + (1.0 - centre_ema) * centre
    per_pair = -F.logsigmoid(beta * (delta - centre))
    return PairLoss(per_pair.mean(), per_pair,
                    {"centre": centre.expand_as(delta), "dpo": -F.logsigmoid(beta * delta.detach())})


LOSSES: dict[str, Callable[..., PairLoss]] = {"sigmoid": sigmoid, "cal_dpo": cal_dpo, "dr_dpo": dr_dpo,
                                              "batch_centred": batch_centred}


def pair_loss(name: str, policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta: float,
              cal_weight: float = 1.0, dr_beta: float = 1.0, centre_ema: float = 0.0,
              running_centre: float | None = None) -> PairLoss:
    """The loss `name` of LOSSES, given every knob; each loss takes the ones it uses."""
    extra = {"cal_dpo": {"cal_weight": cal_weight}, "dr_dpo": {"dr_beta": dr_beta},
             "batch_centred": {"centre_ema": centre_ema, "running_centre": running_centre}}.get(name, {})
    return LOSSES[name](policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=beta, **extra)


def trim_count(n: int, share: float) -> int:
    """How many of n pairs a trim of `share` drops: floor(share * n), so it drops at most that share (a
    micro-batch of 2 at 0.15 drops none). The 1e-9 makes 0.29 * 100 (28.999999999999996 in floats) 29."""
    if not 0 <= share < 1:
        raise ValueError(f"trim share {share} must be in [0, 1)")
    return math.floor(share * n + 1e-9)


def trim_indices(losses, share: float) -> list[int]:
    """Positions of the trim_count(len(losses), share) highest losses, ascending; on equal losses the
    earlier pair goes first."""
    values = [float(x) for x in losses]
    ranked = sorted(range(len(values)), key=lambda i: (-values[i], i))
    return sorted(ranked[:trim_count(len(values), share)])
