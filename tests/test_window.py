"""Sliding-window attention: kernels against the reference's band mask (forward and gradients), with
causal, both alignments, grouped heads, padding and dropout; the two backward schedules agree to the
bit; decoding with a cache keeps each query's window; gradcheck, opcheck and errors."""

import pytest
import torch

import actattn
from actattn import reference
from conftest import assert_attention_op_matches_reference, grads, grouped_random_qkv, random_qkv

ACTIVATIONS = list(actattn.SCORE_ACTIVATIONS)


def window_options(window):
    left, right = window
    return dict(window_left=-1 if left is None else left, window_right=-1 if right is None else right)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(
    "case",
    [
        # (left, right) inside a tile, across tiles (CPU tiles are 64 keys, query blocks 128 rows)
        dict(shape=(2, 3, 200, 200, 16, 8), window=(5, 3)),
        dict(shape=(2, 3, 200, 200, 16, 8), window=(70, 0), causal=True),
        dict(shape=(1, 2, 300, 300, 8, 8), window=(None, 100)),
        dict(shape=(1, 2, 300, 300, 8, 8), window=(130, None)),
        dict(shape=(1, 2, 150, 150, 8, 8), window=(0, 0)),
        # decoding shapes: few queries against many keys, bottom-right, grouped heads, padding, dropout
        dict(shape=(2, 4, 20, 260, 16, 8), window=(64, 0), causal=True, causal_alignment="bottom_right",
             kv_heads=2, key_lengths=[260, 150], dropout_p=0.2),
        dict(shape=(2, 2, 140, 90, 8, 8), window=(10, 10), causal_alignment="bottom_right", key_lengths=[90, 33]),
    ],
    ids=["inside", "causal-across-tiles", "right-only", "left-only", "diagonal", "decode-gqa-padded-dropout",
         "more-queries-bottom-right"],
)
def test_kernel_equals_the_reference(activation, case, device):
    q, k, v = grouped_random_qkv(case["shape"], case.get("kv_heads", case["shape"][1]), device)
    lengths = case.get("key_lengths")
    options = dict(
        activation=activation,
        causal=case.get("causal", False),
        causal_alignment=case.get("causal_alignment", "top_left"),
        key_lengths=None if lengths is None else torch.tensor(lengths, device=device),
        dropout_p=case.get("dropout_p", 0.0),
        dropout_seed=torch.tensor([3], device=device),
        **window_options(case["window"]),
    )
    assert_attention_op_matches_reference(q, k, v, options)


def test_public_function_takes_window_pairs():
    q, k, v = random_qkv((1, 2, 50, 50, 8, 8))
    got = actattn.attention(q, k, v, causal=True, window=(7, None))
    torch.testing.assert_close(got, reference.attention(q, k, v, causal=True, window_left=7))
    # The window is what a dense mask of the band gives through torch's SDPA.
    i, j = torch.arange(50).view(-1, 1), torch.arange(50).view(1, -1)
    band = (j <= i) & (j >= i - 7)
    torch.testing.assert_close(got, torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=band))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_one_pass_and_two_pass_backward_give_the_same_bits(activation):
    """8 heads fill 2 threads (one pass per head); 1 head does not (key and query passes)."""
    q, k, v = random_qkv((1, 8, 300, 300, 16, 16), dtype=torch.float32)
    options = dict(activation=activation, causal=True, window=(90, 0))
    full = grads(actattn.attention(*(t.requires_grad_() for t in (q, k, v)), **options), (q, k, v),
                 torch.ones(1, 8, 300, 16))
    for h in range(8):
        one = [t[:, h : h + 1].detach().requires_grad_() for t in (q, k, v)]
        alone = grads(actattn.attention(*one, **options), one, torch.ones(1, 1, 300, 16))
        for a, f in zip(alone, full):
            assert torch.equal(a, f[:, h : h + 1])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_token_by_token_decoding_keeps_each_querys_window(activation, device):
    q, k, v = random_qkv((2, 2, 40, 40, 8, 8), device=device)
    constants = {"sigmoid": {"bias": -3.0}, "relu": {"divisor": 40.0}}.get(activation, {})
    full = actattn.attention(q, k, v, activation=activation, causal=True, window=(9, 0), **constants)
    for t in range(40):
        step = actattn.attention(q[:, :, t : t + 1], k[:, :, : t + 1], v[:, :, : t + 1], activation=activation,
                                 causal=True, causal_alignment="bottom_right", window=(9, 0), **constants)
        torch.testing.assert_close(step, full[:, :, t : t + 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck(activation):
    q, k, v = random_qkv((1, 2, 9, 11, 4, 3), requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, v: actattn.attention(q, k, v, activation=activation, window=(2, 3)), (q, k, v)
    )


def test_opcheck():
    q, k, v = random_qkv((2, 2, 9, 11, 8, 4), requires_grad=True)
    for window in ((2, 0), (1, -1), (-1, 4)):
        options = dict(activation="sigmoid", causal=window[1] == 0, **window_options(window))
        torch.library.opcheck(torch.ops.actattn.attention.default, (q, k, v), options)


@pytest.mark.parametrize(
    "window,causal,error,match",
    [
        ((-2, 0), False, ValueError, ">= 0"),
        ((3, 1), True, ValueError, "right side must be 0 or None"),
        ((3,), False, TypeError, r"\(left, right\)"),
        ((1.5, 2), False, TypeError, "int or None"),
    ],
)
def test_bad_windows_raise(window, causal, error, match):
    q, k, v = random_qkv((1, 1, 4, 4, 4, 4))
    with pytest.raises(error, match=match):
        actattn.attention(q, k, v, causal=causal, window=window)
    if window == (3, 1):  # the op's own check, without the Python front door
        with pytest.raises(error, match=match):
            torch.ops.actattn.attention(q, k, v, causal=True, window_left=3, window_right=1)
