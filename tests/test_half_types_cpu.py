"""float16 and bfloat16 on the CPU: the kernels read and write them in place and compute in float32
(kernels/cpu/half_types.h), so a half-precision call must give exactly what widening the inputs to
float32, computing, and rounding the result once gives — the rounding is torch's (nearest even, NaN
kept), and nothing is computed in 16 bits."""

import pytest
import torch

import actattn
from conftest import random_qkv

HALF_TYPES = [torch.bfloat16, torch.float16]
CALLS = {
    "softmax causal": lambda q, k, v: actattn.attention(q, k, v, causal=True),
    "sigmoid": lambda q, k, v: actattn.attention(q, k, v, activation="sigmoid"),
    "relu, Nq < Nk, bottom-right": lambda q, k, v: actattn.attention(q[:, :, :20], k, v, activation="relu",
                                                                     causal=True, causal_alignment="bottom_right"),
    # The seed is a tensor argument: the same mask for both calls.
    "softmax causal, dropout": lambda q, k, v: torch.ops.actattn.attention(
        q, k, v, causal=True, dropout_p=0.3, dropout_seed=torch.tensor([17])),
    "linear elu causal": lambda q, k, v: actattn.linear_attention(q, k, v, causal=True),
    "linear identity, unnormalised": lambda q, k, v: actattn.linear_attention(q, k, v, feature_map="identity",
                                                                              normalize=False),
}


@pytest.mark.parametrize("dtype", HALF_TYPES, ids=str)
@pytest.mark.parametrize("name", CALLS)
def test_half_outputs_are_the_float32_result_rounded_once(name, dtype):
    q, k, v = (t.to(dtype) for t in random_qkv((2, 3, 70, 70, 24, 40), dtype=torch.float32))
    out = CALLS[name](q, k, v)
    widened = CALLS[name](q.float(), k.float(), v.float())
    assert out.dtype == dtype
    assert torch.equal(out, widened.to(dtype))


@pytest.mark.parametrize("dtype", HALF_TYPES, ids=str)
def test_half_rounding_keeps_nan_and_overflows_to_inf(dtype):
    q, k, v = (t.to(dtype) for t in random_qkv((1, 1, 8, 8, 4, 4), dtype=torch.float32))
    v[0, 0, 3, 1] = float("nan")
    v[0, 0, 5, 2] = torch.finfo(dtype).max
    out = actattn.attention(q, k, v, activation="relu", scale=1.0, bias=0.0, divisor=1.0)
    widened = actattn.attention(q.float(), k.float(), v.float(), activation="relu", scale=1.0, bias=0.0,
                                divisor=1.0)
    expected = widened.to(dtype)
    assert torch.equal(out.isnan(), expected.isnan()) and out.isnan().any()
    assert torch.equal(out.isinf(), expected.isinf())
    finite = ~expected.isnan()
    assert torch.equal(out[finite], expected[finite])
