"""Decoding with a key/value cache: bottom-right causal alignment and the softmax log-sum-exp."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right, causal_upper_left

import actattn
from actattn import reference
from conftest import grads, random_like, random_qkv

ACTIVATIONS = list(actattn.SCORE_ACTIVATIONS)


def constants_of_the_full_run(activation, k_len):
    """Sigmoid's bias and relu's divisor default to the call's key count; a decoder that wants every
    step to equal the full run passes the full run's values."""
    return {"sigmoid": {"bias": -math.log(k_len)}, "relu": {"divisor": float(k_len)}}.get(activation, {})


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_token_by_token_decoding_equals_the_full_causal_run(activation, device):
    q, k, v = random_qkv((2, 4, 21, 21, 16, 8), device=device)
    constants = constants_of_the_full_run(activation, 21)
    full = actattn.attention(q, k, v, activation=activation, causal=True, **constants)
    for t in range(21):  # one new query against the cache of keys 0..t
        step = actattn.attention(
            q[:, :, t : t + 1], k[:, :, : t + 1], v[:, :, : t + 1], activation=activation, causal=True,
            causal_alignment="bottom_right", **constants,
        )
        torch.testing.assert_close(step, full[:, :, t : t + 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_chunked_prefill_with_grouped_heads_and_a_padded_cache(activation, device):
    """Queries arrive in chunks of 5 against a cache written in place; sequence 1 is 7 tokens shorter
    (its cache tail is padding, key_lengths says so); 4 query heads share 2 key/value heads."""
    n, short = 30, 23
    q, _, _ = random_qkv((2, 4, n, n, 16, 8), device=device)
    _, k, v = random_qkv((2, 2, n, n, 16, 8), device=device, seed=1)
    constants = constants_of_the_full_run(activation, n)
    full = actattn.attention(q, k, v, activation=activation, causal=True, **constants)
    short_full = actattn.attention(q[1:, :, :short], k[1:, :, :short], v[1:, :, :short], activation=activation,
                                   causal=True, **constants)
    cache_k, cache_v = torch.zeros_like(k), torch.zeros_like(v)
    for start in range(0, n, 5):
        stop = min(start + 5, n)
        cache_k[:, :, start:stop], cache_v[:, :, start:stop] = k[:, :, start:stop], v[:, :, start:stop]
        lengths = torch.tensor([stop, min(stop, short)], device=device)
        out = actattn.attention(
            q[:, :, start:stop], cache_k, cache_v, activation=activation, causal=True,
            causal_alignment="bottom_right", key_lengths=lengths, **constants,
        )
        torch.testing.assert_close(out[0], full[0, :, start:stop], rtol=1e-12, atol=1e-12)
        if stop <= short:
            torch.testing.assert_close(out[1], short_full[0, :, start:stop], rtol=1e-12, atol=1e-12)


# Nq < Nk (a chunk against a longer cache) and Nq > Nk (the first queries see no key).
@pytest.mark.parametrize("shape", [(2, 2, 9, 70, 8, 5), (1, 2, 70, 9, 8, 5)], ids=["short-q", "long-q"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_bottom_right_matches_reference_with_gradients(shape, activation, device):
    q, k, v = random_qkv(shape, device=device, requires_grad=True)
    lengths = torch.tensor([shape[3], 5][: shape[0]], device=device)
    out = actattn.attention(q, k, v, activation=activation, causal=True, causal_alignment="bottom_right",
                            key_lengths=lengths)
    expected = reference.attention(q, k, v, activation, True, key_lengths=lengths, causal_alignment="bottom_right")
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    grad_out = random_like(out)
    for got, want, name in zip(grads(out, (q, k, v), grad_out), grads(expected, (q, k, v), grad_out), "qkv"):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=lambda m: f"grad_{name}: {m}")


def test_bottom_right_gradcheck():
    for shape in ((1, 1, 3, 6, 3, 2), (1, 1, 6, 3, 3, 2)):
        q, k, v = random_qkv(shape, requires_grad=True)
        for activation in ACTIVATIONS:
            torch.autograd.gradcheck(
                lambda q, k, v: actattn.attention(q, k, v, activation=activation, causal=True,
                                                  causal_alignment="bottom_right"),
                (q, k, v),
            )


def test_bottom_right_equals_top_left_for_square_inputs_and_is_ignored_without_causal():
    q, k, v = random_qkv((1, 2, 33, 33, 8, 8))
    bottom_right = actattn.attention(q, k, v, causal=True, causal_alignment="bottom_right")
    torch.testing.assert_close(bottom_right, actattn.attention(q, k, v, causal=True))
    torch.testing.assert_close(actattn.attention(q, k, v, causal_alignment="bottom_right"), actattn.attention(q, k, v))


def test_unknown_alignment_is_named():
    q, k, v = random_qkv((1, 1, 4, 4, 8, 8))
    with pytest.raises(ValueError, match="causal_alignment must be one of 'top_left', 'bottom_right'; got 'lower'"):
        actattn.attention(q, k, v, causal=True, causal_alignment="lower")
    assert actattn.CAUSAL_ALIGNMENTS == ("top_left", "bottom_right")


@pytest.mark.parametrize("bias,alignment", [(causal_upper_left, "top_left"), (causal_lower_right, "bottom_right")])
def test_sdpa_takes_torchs_causal_bias(bias, alignment, device):
    q, k, v = random_qkv((2, 2, 7, 19, 8, 8), device=device)
    mask = bias(7, 19)
    out = actattn.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    torch.testing.assert_close(out, actattn.attention(q, k, v, causal=True, causal_alignment=alignment))


def test_log_sum_exp_merges_attention_over_key_blocks(device):
    """Split-KV / ring attention: softmax over two key halves, merged by their log-sum-exps, is softmax
    over all keys."""
    q, k, v = random_qkv((2, 2, 9, 40, 8, 6), device=device)
    full, full_lse = actattn.attention(q, k, v, return_lse=True)
    scores = q @ k.transpose(-2, -1) / math.sqrt(8)
    torch.testing.assert_close(full_lse, scores.logsumexp(dim=-1))
    first, lse1 = actattn.attention(q, k[:, :, :25], v[:, :, :25], return_lse=True)
    second, lse2 = actattn.attention(q, k[:, :, 25:], v[:, :, 25:], return_lse=True)
    lse = torch.logaddexp(lse1, lse2)
    merged = (lse1 - lse).exp().unsqueeze(-1) * first + (lse2 - lse).exp().unsqueeze(-1) * second
    torch.testing.assert_close(merged, full)
    torch.testing.assert_close(lse, full_lse)


def test_log_sum_exp_of_rows_without_keys_is_minus_infinity_and_carries_no_gradient():
    q, k, v = random_qkv((1, 1, 6, 3, 4, 4), requires_grad=True)
    out, lse = actattn.attention(q, k, v, causal=True, causal_alignment="bottom_right", return_lse=True)
    assert torch.equal(lse[0, 0, :3], torch.full((3,), -math.inf, dtype=lse.dtype)), "rows 0-2 see no key"
    assert torch.equal(out[0, 0, :3], torch.zeros(3, 4, dtype=out.dtype))
    assert not lse.requires_grad and out.requires_grad
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    with pytest.raises(ValueError, match="return_lse=True needs activation='softmax'"):
        actattn.attention(q, k, v, activation="sigmoid", return_lse=True)


def test_decoding_surface_compiles_fullgraph():
    def step(q, k, v, lengths):
        out, lse = actattn.attention(q, k, v, causal=True, causal_alignment="bottom_right", key_lengths=lengths,
                                     return_lse=True)
        sdpa = actattn.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, activation="relu")
        return out.sum() + sdpa.sum() + lse.clamp(min=0).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    q, _, _ = random_qkv((2, 4, 3, 3, 8, 8), dtype=torch.float32, requires_grad=True)
    _, k, v = random_qkv((2, 2, 12, 12, 8, 8), dtype=torch.float32, requires_grad=True)
    lengths = torch.tensor([12, 7])
    got = compiled(q, k, v, lengths)
    torch.testing.assert_close(got, step(q, k, v, lengths))
    got.backward()
    assert all(t.grad is not None for t in (q, k, v))
