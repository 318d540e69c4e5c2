"""Decode attention for the in-house engine: one query token per row, as plain
batched matmuls over the engine's preallocated KV buffers.

PyTorch's CPU SDPA kernel (`_scaled_dot_product_flash_attention_for_cpu`) is
built for blocks of queries; with one query per row it took 54% of a batch-64
decode step here, more than every linear layer together. Two matmuls and a
softmax on the grouped heads (no `repeat_kv`) do the same work in a fraction of
that. The engine also hands over its whole buffers (written columns plus
headroom, masked) instead of a slice, because a sliced cache is copied to a
contiguous one by every matmul.

Prefill (several query tokens) goes to the stock SDPA path unchanged.
`use_decode_attention(model)` switches a model to this implementation for the
duration of a `with` block and restores the previous one.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "selftrain_decode"


def decode_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                     scaling: float | None = None, **kwargs):
    """query (rows, heads, q, dim); key/value (rows, kv_heads, length, dim);
    attention_mask boolean, True where a row may attend. Returns (rows, q, heads, dim)."""
    if query.shape[2] != 1 or kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    # the query heads that share one kv head, scaled before the matmul: fewer elements than the scores once
    # the cache is longer than a head (64 here), and exact for a power-of-4 head size (else one more rounding)
    grouped = query.view(rows, kv_heads, heads // kv_heads, dim) * (scaling if scaling is not None else dim ** -0.5)
    scores = torch.matmul(grouped, key.transpose(-1, -2))
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores.masked_fill_(~attention_mask, float("-inf"))
        else:
            scores.add_(attention_mask)
    probs = torch.softmax(scores, -1, dtype=torch.float32).to(value.dtype)  # in float32 without a float copy
    out = torch.matmul(probs, value)  # (rows, kv_heads, group, dim)
    return out.reshape(rows, 1, heads, dim), None


AttentionInterface.register(NAME, decode_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)  # prefill builds the same masks as `sdpa`


@contextmanager
def use_decode_attention(model):
    previous = model.config._attn_implementation
    if previous not in ("sdpa", "eager", NAME):  # flash/flex kernels: keep what the user chose
        yield
        return
    model.set_attn_implementation(NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
