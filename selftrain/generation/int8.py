"""int8 linear layers for generation: per-output-channel int8 weights, per-token
int8 activations, one int8 x int8 -> int32 matmul (`torch._int_mm`) per layer.

Measured on 2 cores with `torch._int_mm` alone: a batch-64 projection of
SmolLM2 ran at ~1,400 int8 GOP/s against ~600 GFLOP/s in bf16 on the AVX-512
kind, and ~370 against ~170 GFLOP/s in fp32 with AVX2 kernels only. Around
211 layers per decode step, the elementwise quantization ate most of that. Per-token activation
scales keep one outlier token from flattening the others (PyTorch's
`quantize_dynamic` uses one scale per tensor and broke this model's greedy
replies outright: 0/64 identical to fp32, 6% token agreement).

This is an approximation of the model: the generation benchmark measures how
far it moves the greedy replies and the held-out accuracy. For SmolLM2 that
was outside noise (docs/backends-and-speed.md: "Generation speed"), so `generation.backend: auto`
never picks it; `generation.backend: selftrain_int8` forces it.
"""
from __future__ import annotations

import torch
from torch import nn


class Int8Linear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()  # (out, in)
        scale = weight.abs().amax(1).clamp(min=1e-12) / 127.0
        quantized = (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
        # (in, out) as the transpose of a contiguous (out, in): the layout the CPU int8 kernel runs fastest
        self.register_buffer("weight_t", quantized.t(), persistent=False)
        self.register_buffer("weight_scale", scale, persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float(), persistent=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # As few passes over the activations as it takes: the elementwise work around the int8
        # matmul is what limits this path at decode batch sizes (211 layers per step).
        shape = x.shape
        flat = x.reshape(-1, self.in_features).float()
        scale = torch.linalg.vector_norm(flat, float("inf"), dim=1, keepdim=True).clamp_(min=1e-12).div_(127.0)
        quantized = flat.div(scale).round_().to(torch.int8)  # |x / scale| <= 127 by construction
        out = torch._int_mm(quantized, self.weight_t).float()
        out = torch.addcmul(self.bias, out, scale * self.weight_scale) if self.bias is not None else \
            out.mul_(scale * self.weight_scale)
        return out.to(x.dtype).reshape(*shape[:-1], self.out_features)


def quantize_linears(model: nn.Module) -> int:
    """Replace every nn.Linear of `model` (the LM head included) by an Int8Linear, in place.
    Returns how many were replaced. The model is for generation only afterwards."""
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8Linear(module))
    return len(targets)
