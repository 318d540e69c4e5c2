"""The generation paths of issue 11: decode attention, two-level sampling, int8 linear
layers, and `generation.backend: auto` (which path runs which stage, and why)."""
import os
import subprocess
import sys

import pytest
import torch

from selftrain.config import load_config
from selftrain.errors import InputError
from selftrain.generation import SamplingParams, request_seed
from selftrain.generation.attention import decode_attention
from selftrain.generation.choose import choose_backend
from selftrain.generation.engine import Engine, TokenRequest, _cut, inverse_cdf, sample_next
from selftrain.generation.int8 import Int8Linear, quantize_linears
from selftrain.models import cpu_kind, load_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Module:
    num_key_value_groups = 3


def test_decode_attention_equals_sdpa_on_grouped_heads_with_padding():
    torch.manual_seed(0)
    rows, heads, kv_heads, length, dim = 5, 6, 2, 11, 8
    query = torch.randn(rows, heads, 1, dim)
    key, value = torch.randn(rows, kv_heads, length, dim), torch.randn(rows, kv_heads, length, dim)
    mask = torch.ones(rows, 1, 1, length, dtype=torch.bool)
    mask[0, ..., :4] = False  # left padding
    mask[3, ..., -2:] = False  # unwritten buffer columns
    got, _ = decode_attention(_Module(), query, key, value, mask, scaling=0.3)
    rep = heads // kv_heads
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1), attn_mask=mask, scale=0.3)
    assert got.shape == (rows, 1, heads, dim)
    torch.testing.assert_close(got, expected.transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_inverse_cdf_equals_a_full_cumulative_sum():
    torch.manual_seed(1)
    weights = torch.rand(6, 5000) ** 6
    weights[:, 2500:] = 0  # a block boundary inside the vocabulary, zero tail
    uniform = 1 - torch.rand(6, dtype=torch.float64)
    full = torch.searchsorted(weights.double().cumsum(-1), (uniform * weights.double().sum(-1)).unsqueeze(-1))
    assert torch.equal(inverse_cdf(weights, uniform), full.squeeze(-1))


def test_inverse_cdf_never_returns_a_zero_weight_token_and_follows_the_distribution():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.0, 0.0, 0.3, 0.0])
    n = 100_000
    uniform = 1 - torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    drawn = inverse_cdf(probs.expand(n, -1).contiguous(), uniform, block=3)
    share = torch.bincount(drawn, minlength=7).double() / n
    assert share[[1, 3, 4, 6]].sum() == 0
    torch.testing.assert_close(share[[0, 2, 5]], torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64), atol=0.01, rtol=0)
    edges = inverse_cdf(probs.unsqueeze(0).expand(2, -1).contiguous(), torch.tensor([1.0, 1e-300], dtype=torch.float64), 3)
    assert edges.tolist() == [5, 0]  # u = 1: the last positive token; u -> 0: the first


def test_sampling_in_the_reused_buffer_draws_the_same_tokens_and_leaves_the_logits_alone():
    logits = torch.randn(6, 3000) * 3
    kept = logits.clone()
    scratch = torch.full((8, 3000), float("nan"))  # larger than the batch, stale content
    for params in (SamplingParams(0.8, 1.0, 0, 8), SamplingParams(1.3, 0.9, 50, 8)):
        draws = [sample_next(logits, params, [torch.Generator().manual_seed(s) for s in range(6)], buffer)
                 for buffer in (None, scratch)]
        assert torch.equal(draws[0], draws[1])
        assert torch.equal(logits, kept)
    # the same draws as the full softmax of the cut logits would give from the same uniforms
    params = SamplingParams(1.3, 0.9, 50, 8)
    uniform = 1.0 - torch.cat([torch.rand(1, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
                               for s in range(6)])
    expected = inverse_cdf(torch.softmax(_cut(logits / 1.3, 50, 0.9), -1), uniform)
    assert torch.equal(sample_next(logits, params, [torch.Generator().manual_seed(s) for s in range(6)], scratch),
                       expected)
    assert sample_next(logits.bfloat16(), SamplingParams(0.0, 1.0, 0, 8), [], scratch).tolist() == \
        logits.bfloat16().argmax(-1).tolist()


def test_int8_linear_is_close_to_the_float_layer():
    torch.manual_seed(3)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(2, 7, 64)
    x[0, 3] *= 40  # an outlier token: per-token scales keep the other tokens exact
    got, expected = Int8Linear(linear)(x), linear(x)
    assert got.shape == expected.shape and got.dtype == x.dtype
    error = (got - expected).norm(dim=-1) / expected.norm(dim=-1)
    assert error.max() < 0.02, error
    bf16 = Int8Linear(linear)(x.bfloat16())
    assert bf16.dtype == torch.bfloat16


def test_quantize_linears_replaces_every_linear_layer(tiny_model_dir, tokenizer):
    model = load_model(tiny_model_dir, dtype="fp32", device="cpu")
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert quantize_linears(model) == linears > 0
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert isinstance(model.lm_head, Int8Linear)
    engine = Engine(model, tokenizer, SamplingParams(0.8, 1.0, 0, 8), batch_size=4, progress=False)
    ids = tokenizer("What is 2 + 2?")["input_ids"]
    out = list(engine.generate([TokenRequest(f"r{i}", ids, request_seed(0, f"r{i}")) for i in range(6)]))
    assert sorted(c.key for c in out) == [f"r{i}" for i in range(6)]
    assert all(c.finish_reason in ("stop", "length") and len(c.token_ids) <= 8 for c in out)


def config(**generation):
    return load_config(None, {f"generation.{k}": v for k, v in generation.items()})


def test_auto_runs_the_exact_engine_for_sampling_and_evaluation():
    """The benchmark found the int8 path outside the noise of the exact engine's accuracy."""
    for role in ("sample", "eval"):
        name, why = choose_backend(config(), role)
        assert name == "selftrain" and why.startswith(f"auto on {cpu_kind()}: the exact engine"), why
    with pytest.raises(ValueError, match="role 'train'"):
        choose_backend(config(), "train")


@pytest.mark.parametrize("backend", ["selftrain", "selftrain_int8", "hf"])
def test_a_forced_backend_runs_every_stage(backend):
    for role in ("sample", "eval"):
        assert choose_backend(config(backend=backend), role) == (backend, f"set by generation.backend: {backend}")


def test_avx2_emulation_gives_the_avx2_kind_and_fp32():
    code = ("import torch; from selftrain.models import cpu_kind, best_dtype; "
            "print(cpu_kind(), best_dtype(torch.device('cpu')))")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "PYTHONPATH": REPO}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["avx2", "torch.float32"]
