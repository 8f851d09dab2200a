"""Key padding (key_lengths) for every attention kind: keys past a sequence's length take no part."""

import pytest
import torch

import actattn
from actattn import reference
from conftest import grads, random_like, random_qkv

ACTIVATIONS = ["softmax", "sigmoid", "relu"]
FEATURE_MAPS = ["identity", "relu", "elu"]


def lengths(values, device):
    return torch.tensor(values, device=device)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_attention_matches_reference(activation, causal, device):
    q, k, v = random_qkv((3, 2, 70, 70, 5, 4), device=device, requires_grad=True)
    key_lengths = lengths([70, 9, 0], device)  # full, short (inside the first tile), none
    out = actattn.attention(q, k, v, activation=activation, causal=causal, key_lengths=key_lengths)
    expected = reference.attention(q, k, v, activation, causal, key_lengths=key_lengths)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    grad_out = random_like(out)
    for got, want in zip(grads(out, (q, k, v), grad_out), grads(expected, (q, k, v), grad_out)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_attention_padded_equals_unpadded(activation, causal, device):
    """A padded sequence gives what the same sequence gives alone, defaults (-log n, 1/n) included."""
    q, k, v = random_qkv((2, 2, 20, 80, 6, 3), device=device, requires_grad=True)
    key_lengths = [80, 67]
    out = actattn.attention(q, k, v, activation=activation, causal=causal, key_lengths=lengths(key_lengths, device))
    grad_out = random_like(out)
    dq, dk, dv = grads(out, (q, k, v), grad_out)
    for b, n in enumerate(key_lengths):
        alone = actattn.attention(q[b : b + 1], k[b : b + 1, :, :n], v[b : b + 1, :, :n], activation=activation,
                                  causal=causal)
        torch.testing.assert_close(out[b : b + 1], alone)
        dq_alone, dk_alone, dv_alone = grads(alone, (q, k, v), grad_out[b : b + 1])
        torch.testing.assert_close(dq[b], dq_alone[b])
        torch.testing.assert_close(dk[b, :, :n], dk_alone[b, :, :n])
        torch.testing.assert_close(dv[b, :, :n], dv_alone[b, :, :n])
        # Padding keys get exactly zero gradients.
        assert torch.equal(dk[b, :, n:], torch.zeros_like(dk[b, :, n:]))
        assert torch.equal(dv[b, :, n:], torch.zeros_like(dv[b, :, n:]))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_attention_gradcheck(activation, device):
    q, k, v = random_qkv((2, 1, 4, 6, 3, 2), device=device, requires_grad=True)
    key_lengths = lengths([3, 6], device)
    assert torch.autograd.gradcheck(
        lambda q, k, v: actattn.attention(q, k, v, activation=activation, causal=True, key_lengths=key_lengths),
        (q, k, v),
    )


@pytest.mark.parametrize("normalize", [True, False], ids=["norm", "unnorm"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_linear_matches_reference(feature_map, causal, normalize, device):
    q, k, v = random_qkv((3, 2, 70, 70, 5, 4), device=device)
    if normalize and feature_map == "identity":
        q, k = q.abs(), k.abs()  # keep the identity map's denominator away from zero
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    key_lengths = lengths([70, 9, 0], device)
    options = dict(feature_map=feature_map, causal=causal, normalize=normalize)
    out, state = actattn.linear_attention(q, k, v, key_lengths=key_lengths, return_state=True, **options)
    expected, expected_state = reference.linear_attention(
        q, k, v, feature_map, causal, normalize, key_lengths=key_lengths
    )
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(tuple(state), expected_state, rtol=1e-9, atol=1e-11)
    grad_outputs = [random_like(out), random_like(state.kv, seed=2), random_like(state.normalizer, seed=3)]
    got = grads([out, *state], (q, k, v), grad_outputs)
    want = grads([expected, *expected_state], (q, k, v), grad_outputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)
    for b, n in enumerate(key_lengths.tolist()):
        assert torch.equal(got[1][b, :, n:], torch.zeros_like(got[1][b, :, n:]))
        assert torch.equal(got[2][b, :, n:], torch.zeros_like(got[2][b, :, n:]))


def test_linear_causal_padded_state_equals_unpadded(device):
    q, k, v = random_qkv((2, 2, 100, 100, 4, 3), device=device)
    key_lengths = [100, 71]
    out, state = actattn.linear_attention(q, k, v, causal=True, key_lengths=lengths(key_lengths, device),
                                          return_state=True)
    for b, n in enumerate(key_lengths):
        alone, alone_state = actattn.linear_attention(q[b : b + 1, :, :n], k[b : b + 1, :, :n], v[b : b + 1, :, :n],
                                                      causal=True, return_state=True)
        torch.testing.assert_close(out[b : b + 1, :, :n], alone)
        torch.testing.assert_close(state.kv[b : b + 1], alone_state.kv)
        torch.testing.assert_close(state.normalizer[b : b + 1], alone_state.normalizer)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_linear_padded_equals_unpadded_on_tensor_core_shapes(causal, device):
    """bfloat16 at D = 64 takes the tensor-core kernels on a GPU, which must zero padding rows after the
    feature map (elu+1 of a zero row is one) and keep their NaN-free zero gradients."""
    q, k, v = random_qkv((2, 2, 150, 150, 64, 64), dtype=torch.bfloat16, device=device, requires_grad=True)
    with torch.no_grad():
        k[1, :, 83:] = float("nan")  # padding may hold anything
        v[1, :, 83:] = float("nan")
    key_lengths = [150, 83]
    out = actattn.linear_attention(q, k, v, causal=causal, key_lengths=lengths(key_lengths, device))
    grad_out = random_like(out)
    for b, n in enumerate(key_lengths):
        if causal:  # queries past the padding see every real key; the lone sequence has none of them
            grad_out[b, :, n:] = 0
    dq, dk, dv = grads(out, (q, k, v), grad_out)
    for b, n in enumerate(key_lengths):
        rows = n if causal else q.shape[2]
        one = (slice(b, b + 1), slice(None))
        alone = actattn.linear_attention(q[one + (slice(rows),)], k[one + (slice(n),)], v[one + (slice(n),)],
                                         causal=causal)
        torch.testing.assert_close(out[one + (slice(rows),)], alone)
        dq_alone, dk_alone, dv_alone = grads(alone, (q, k, v), grad_out[one + (slice(rows),)])
        torch.testing.assert_close(dq[b, :, :rows], dq_alone[b, :, :rows])
        torch.testing.assert_close(dk[b, :, :n], dk_alone[b, :, :n])
        torch.testing.assert_close(dv[b, :, :n], dv_alone[b, :, :n])
        assert torch.equal(dk[b, :, n:], torch.zeros_like(dk[b, :, n:]))
        assert torch.equal(dv[b, :, n:], torch.zeros_like(dv[b, :, n:]))


def test_linear_gradcheck_with_state(device):
    q, k, v = random_qkv((2, 1, 5, 5, 3, 2), device=device, requires_grad=True)
    kv = torch.randn(2, 1, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    z = torch.rand(2, 1, 3, dtype=torch.float64, device=device, requires_grad=True)
    key_lengths = lengths([2, 5], device)

    def fn(q, k, v, kv, z):
        out, state = actattn.linear_attention(q, k, v, causal=True, initial_state=(kv, z), key_lengths=key_lengths,
                                              return_state=True)
        return out, state.kv, state.normalizer

    assert torch.autograd.gradcheck(fn, (q, k, v, kv, z))


def test_int32_lengths_and_out_of_range_values_are_clamped(device):
    q, k, v = random_qkv((3, 1, 4, 6, 3, 2), device=device)
    clamped = actattn.attention(q, k, v, key_lengths=torch.tensor([-3, 100, 4], dtype=torch.int32, device=device))
    expected = actattn.attention(q, k, v, key_lengths=lengths([0, 6, 4], device))
    torch.testing.assert_close(clamped, expected)


@pytest.mark.parametrize(
    "key_lengths,error,message",
    [
        (torch.tensor([1.0, 2.0]), TypeError, r"key_lengths must be an int64 or int32 tensor, got Float"),
        (torch.tensor([1, 2, 3]), ValueError, r"key_lengths must have shape \(batch,\) = \[2\], got \[3\]"),
        (torch.tensor([[1, 2]]), ValueError, r"key_lengths must have shape \(batch,\)"),
    ],
)
def test_bad_key_lengths(key_lengths, error, message):
    q, k, v = random_qkv((2, 1, 4, 4, 3, 2))
    with pytest.raises(error, match=message):
        actattn.attention(q, k, v, key_lengths=key_lengths)
    with pytest.raises(error, match=message):
        actattn.linear_attention(q, k, v, key_lengths=key_lengths)
