"""Quadratic attention (softmax, sigmoid, relu; causal or not) against actattn.reference."""

import math

import pytest
import torch
import torch.nn.functional as F

import actattn
from actattn import reference
from conftest import (
    assert_compact_tiles_give_the_same_bits, assert_within_twice_composite,
    grads, random_like, random_qkv,
)

ACTIVATIONS = ["softmax", "sigmoid", "relu"]

# (B, H, Nq, Nk, Dk, Dv): tile edges (the kernels tile keys by 64), Nq != Nk, Dk != Dv, D from 1 to 256.
SHAPES = [
    (1, 1, 1, 1, 1, 1),
    (2, 2, 2, 2, 3, 3),
    (1, 2, 63, 63, 16, 16),
    (1, 1, 64, 64, 64, 64),
    (2, 1, 65, 65, 96, 96),
    (1, 1, 257, 257, 128, 128),
    (1, 1, 65, 65, 256, 256),
    (1, 2, 63, 130, 16, 32),
    (1, 1, 130, 63, 3, 1),
    (1, 1, 64, 65, 64, 96),
]


def check_against_reference(shape, activation, causal, device, **options):
    q, k, v = random_qkv(shape, device=device, requires_grad=True)
    out = actattn.attention(q, k, v, activation=activation, causal=causal, **options)
    expected = reference.attention(q, k, v, activation, causal, **options)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    grad_out = random_like(out)
    for got, want, name in zip(grads(out, (q, k, v), grad_out), grads(expected, (q, k, v), grad_out), "qkv"):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=lambda m: f"grad_{name}: {m}")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_matches_reference_float64(shape, activation, causal, device):
    check_against_reference(shape, activation, causal, device)


@pytest.mark.parametrize("options", [{"scale": 0.3}, {"bias": 0.5, "divisor": 3.0}, {"bias": -2.0}])
@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_explicit_constants(activation, options, device):
    check_against_reference((1, 2, 9, 11, 5, 4), activation, True, device, **options)


def test_softmax_matches_sdpa(device):
    q, k, v = random_qkv((2, 3, 17, 23, 8, 8), device=device)
    for causal in (False, True):
        out = actattn.attention(q, k, v, causal=causal)
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=causal))


def test_defaults_follow_the_papers(device):
    q, k, v = random_qkv((1, 1, 4, 6, 2, 3), device=device)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(2)
    sigmoid = actattn.attention(q, k, v, activation="sigmoid")
    torch.testing.assert_close(sigmoid, torch.sigmoid(scores - math.log(6)) @ v)
    relu = actattn.attention(q, k, v, activation="relu")
    torch.testing.assert_close(relu, (F.relu(scores) / 6) @ v)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck(activation, causal, device):
    q, k, v = random_qkv((1, 2, 5, 7, 3, 4), device=device, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, v: actattn.attention(q, k, v, activation=activation, causal=causal), (q, k, v)
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_low_precision_error_at_most_twice_the_composite(activation, causal, dtype, device):
    """flash-attention's rule: |kernel - fp64 reference| <= 2 |torch composite in dtype - fp64 reference|."""
    assert_within_twice_composite(
        lambda q, k, v: actattn.attention(q, k, v, activation=activation, causal=causal),
        lambda q, k, v: reference.attention(q, k, v, activation, causal),
        random_qkv((2, 2, 97, 97, 64, 64), device=device),
        dtype,
    )


# Calls that take the CUDA tensor-core kernels (float16 / bfloat16, head dim 32, 64, 96, 128 or 256 or
# (Dk, Dv) = (192, 128), 16-byte aligned rows): tile edges, Nq != Nk both ways, padding keys (a sequence
# without keys too), (B, N, H, D) memory.
TENSOR_CORE_CASES = {
    "d128-nq-over-nk": ((1, 2, 130, 70, 128, 128), None, False),
    "d64-padded": ((2, 2, 65, 200, 64, 64), [200, 37], False),
    "d64-bnhd-empty": ((2, 3, 97, 97, 64, 64), [0, 50], True),
    "d96-padded": ((2, 2, 100, 100, 96, 96), [100, 41], False),
    "d32-bnhd-nq-under-nk": ((1, 3, 70, 130, 32, 32), None, True),
    "d256-padded-nq-over-nk": ((2, 1, 100, 70, 256, 256), [70, 33], False),
    "d192-128-bnhd-padded": ((2, 2, 100, 130, 192, 128), [130, 41], True),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("case", TENSOR_CORE_CASES)
def test_tensor_core_shapes_within_twice_composite(case, activation, causal, dtype, device):
    shape, key_lengths, interleaved = TENSOR_CORE_CASES[case]
    q, k, v = random_qkv(shape, device=device)
    if interleaved:  # the same values laid out (B, N, H, D), viewed as (B, H, N, D)
        q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    lengths = None if key_lengths is None else torch.tensor(key_lengths, device=device)
    assert_within_twice_composite(
        lambda q, k, v: actattn.attention(q, k, v, activation=activation, causal=causal, key_lengths=lengths),
        lambda q, k, v: reference.attention(q, k, v, activation, causal, key_lengths=lengths),
        (q, k, v),
        dtype,
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the tensor-core kernels are CUDA's")
@pytest.mark.parametrize("dims", [(128, 128), (256, 256), (192, 128)], ids=["d128", "d256", "d192-128"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_cuda_compact_tiles_give_the_full_tiles_bits(dims, causal, monkeypatch):
    """The dK/dV kernel's compact tiles (sm_86/89: 32-query tiles at D = 128 and (192, 128), one buffer at
    D = 256) walk the same products in the same order: the same gradients, bit for bit."""
    q, k, v = (t.cuda().bfloat16().requires_grad_() for t in random_qkv((2, 2, 150, 150, *dims)))
    assert_compact_tiles_give_the_same_bits(
        lambda q, k, v: actattn.attention(q, k, v, causal=causal), q, k, v, monkeypatch
    )


def test_non_contiguous_inputs(device):
    batch, heads, n, d = 2, 3, 20, 8
    gen = torch.Generator().manual_seed(0)
    # (B, N, H, D) viewed as (B, H, N, D), and a value tensor whose last dim is strided.
    q, k = (torch.randn(batch, n, heads, d, generator=gen, dtype=torch.float64).transpose(1, 2) for _ in range(2))
    v = torch.randn(batch, heads, d, n, generator=gen, dtype=torch.float64).transpose(-2, -1)
    q, k, v = (t.to(device).requires_grad_() for t in (q, k, v))
    assert not any(t.is_contiguous() for t in (q, k, v))
    for activation in ACTIVATIONS:
        out = actattn.attention(q, k, v, activation=activation, causal=True)
        expected = reference.attention(q, k, v, activation, True)
        torch.testing.assert_close(out, expected)
        grad_out = random_like(out).transpose(-2, -1).contiguous().transpose(-2, -1)  # strided grad too
        for got, want in zip(grads(out, (q, k, v), grad_out), grads(expected, (q, k, v), grad_out)):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("shape", [(0, 2, 5, 5, 4, 4), (1, 2, 0, 5, 4, 4), (1, 2, 5, 0, 4, 4), (1, 0, 3, 3, 4, 2)])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_empty_inputs(shape, activation, device):
    q, k, v = random_qkv(shape, device=device, requires_grad=True)
    out = actattn.attention(q, k, v, activation=activation, causal=True)
    assert out.shape == (shape[0], shape[1], shape[2], shape[5])
    # No key: every output row is an empty sum, exactly zero (never uninitialised memory or NaN).
    assert torch.equal(out, torch.zeros_like(out))
    dq, dk, dv = grads(out, (q, k, v), torch.ones_like(out))
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    assert all(torch.equal(g, torch.zeros_like(g)) for g in (dq, dk, dv))


@pytest.mark.parametrize("dtype, dim", [(torch.float32, 32), (torch.bfloat16, 64)])  # generic, tensor cores
def test_backward_is_deterministic(dtype, dim, device):
    q, k, v = random_qkv((2, 4, 130, 130, dim, dim), dtype=dtype, device=device, requires_grad=True)
    runs = []
    for _ in range(2):
        out = actattn.attention(q, k, v, causal=True)
        runs.append(grads(out, (q, k, v), random_like(out)))
    for first, second in zip(*runs):
        assert torch.equal(first, second)


def test_large_scores_stay_finite(device):
    q, k, v = random_qkv((1, 1, 70, 70, 16, 16), device=device)
    for activation in ACTIVATIONS:
        out = actattn.attention(q * 1e4, k, v, activation=activation)
        assert torch.isfinite(out).all(), activation
        torch.testing.assert_close(out, reference.attention(q * 1e4, k, v, activation))


@pytest.mark.parametrize("wanted", ["q", "k", "v", "kv", "qv"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_backward_computes_only_the_gradients_autograd_asks_for(activation, wanted, device):
    q, k, v = random_qkv((2, 2, 70, 67, 8, 5), device=device)
    for t, name in zip((q, k, v), "qkv"):
        t.requires_grad_(name in wanted)
    out = actattn.attention(q, k, v, activation=activation, causal=True)
    expected = reference.attention(q, k, v, activation, True)
    inputs = [t for t in (q, k, v) if t.requires_grad]
    grad_out = random_like(out)
    for got, want in zip(torch.autograd.grad(out, inputs, grad_out), torch.autograd.grad(expected, inputs, grad_out)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_backward_op_returns_only_the_masked_gradients(device):
    q, k, v = random_qkv((1, 2, 9, 11, 4, 3), device=device)
    # With dropout: each pass regenerates the same mask. Then key_lengths (none) and the dropout seed.
    options = ("softmax", True, None, None, None, "top_left", 0.3, -1, -1, None, torch.tensor([3], device=device))
    out, lse = torch.ops.actattn._attention_forward(q, k, v, *options)
    grad_out = random_like(out)
    full = torch.ops.actattn._attention_backward(grad_out, q, k, v, out, lse, *options, [True, True, True])
    for mask in ([True, False, False], [False, True, False], [False, False, True], [False, False, False]):
        got = torch.ops.actattn._attention_backward(grad_out, q, k, v, out, lse, *options, mask)
        for wanted, g, f in zip(mask, got, full):
            assert (g is not None) == wanted
            if wanted:
                assert torch.equal(g, f), "a pass computed alone gives the same bits"
