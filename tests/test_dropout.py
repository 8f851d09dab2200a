"""Attention dropout: the generator (Philox, known answers), the kernels against the reference that
applies the same mask (forward and gradients), the keep rate and scale, determinism, and the modules."""

import pytest
import torch
from torch import nn

import actattn
from actattn import reference
from actattn.nn import MultiheadAttention, swap_attention
from conftest import (
    assert_attention_op_matches_reference,
    assert_within_twice_composite,
    grouped_random_qkv,
    random_qkv,
)

ACTIVATIONS = list(actattn.SCORE_ACTIVATIONS)


def seed_tensor(value, device="cpu"):
    return torch.tensor([value], dtype=torch.int64, device=device)


# Random123's known-answer vectors for philox4x32_10: (counter, key) -> output words.
PHILOX_KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", PHILOX_KNOWN_ANSWERS)
def test_reference_philox_gives_the_known_answers(counter, key, expected):
    words = reference.philox4x32_10(tuple(torch.tensor([c]) for c in counter), key[0] | key[1] << 32)
    assert tuple(int(w) for w in words) == expected


def weights_through_identity_values(q, k, **options):
    """The dropped weights the kernel applies: its output for v = identity (Nk x Nk)."""
    eye = torch.eye(k.shape[-2], dtype=q.dtype, device=q.device).expand(*k.shape[:2], -1, -1)
    return actattn.attention(q, k, eye, **options)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(
    "case",
    [
        dict(shape=(2, 3, 70, 70, 16, 8), causal=False),
        dict(shape=(2, 3, 70, 70, 16, 8), causal=True),
        # more queries than a tile, keys past a tile edge, bottom-right decoding, grouped heads, padding
        dict(shape=(2, 4, 150, 130, 32, 24), causal=True, causal_alignment="bottom_right", kv_heads=2,
             key_lengths=[130, 77]),
        dict(shape=(1, 2, 5, 200, 8, 8), causal=False, key_lengths=[131]),
    ],
    ids=["plain", "causal", "bottom-right-gqa-padded", "decode-padded"],
)
def test_kernel_equals_the_reference_with_the_same_mask(activation, case, device):
    q, k, v = grouped_random_qkv(case["shape"], case.get("kv_heads", case["shape"][1]), device)
    lengths = case.get("key_lengths")
    options = dict(
        activation=activation,
        causal=case["causal"],
        causal_alignment=case.get("causal_alignment", "top_left"),
        key_lengths=None if lengths is None else torch.tensor(lengths, device=device),
        dropout_p=0.3,
        dropout_seed=seed_tensor(0x1234_5678_9ABC_DEF, device),
    )
    assert_attention_op_matches_reference(q, k, v, options)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_and_scale(p, device):
    """Of 2 x 4 x 128 x 128 = 131k weights, the kept fraction is 1 - p within 5 standard deviations
    (about 0.7 %), in every row block and head alike, and a kept weight is the undropped one / (1 - p)."""
    q, k, _ = random_qkv((2, 4, 128, 128, 16, 16), device=device)
    undropped = weights_through_identity_values(q, k, activation="sigmoid")
    dropped = weights_through_identity_values(q, k, activation="sigmoid", dropout_p=p)
    kept = dropped != 0
    n = kept.numel()
    tolerance = 5 * (p * (1 - p) / n) ** 0.5
    assert abs(kept.double().mean().item() - (1 - p)) < tolerance
    per_head = kept.double().mean(dim=(2, 3))  # 8 groups of 16k
    assert (per_head - (1 - p)).abs().max().item() < 5 * (p * (1 - p) / (n / 8)) ** 0.5
    torch.testing.assert_close(dropped[kept], undropped[kept] / (1 - p), rtol=1e-13, atol=0)


def test_neighbouring_keys_and_rows_are_not_correlated():
    """Keys sharing one Philox draw (4 per draw) and neighbouring rows are kept independently: the
    joint keep rate of adjacent pairs is (1 - p)^2 within 5 standard deviations."""
    q, k, _ = random_qkv((1, 8, 128, 128, 16, 16))
    kept = weights_through_identity_values(q, k, activation="sigmoid", dropout_p=0.5) != 0
    for pair in (kept[..., 1:] & kept[..., :-1], kept[:, :, 1:] & kept[:, :, :-1]):
        assert abs(pair.double().mean().item() - 0.25) < 5 * (0.25 * 0.75 / pair.numel()) ** 0.5


def test_same_seed_same_mask_other_seed_other_mask(device):
    q, k, v = random_qkv((1, 2, 40, 40, 8, 8), device=device)
    torch.manual_seed(7)
    a = actattn.attention(q, k, v, dropout_p=0.5)
    b = actattn.attention(q, k, v, dropout_p=0.5)
    torch.manual_seed(7)
    again = actattn.attention(q, k, v, dropout_p=0.5)
    assert torch.equal(a, again)
    assert not torch.equal(a, b)


def test_p_zero_is_no_dropout_and_p_one_drops_everything(device):
    q, k, v = random_qkv((2, 2, 33, 33, 8, 8), device=device)
    plain = actattn.attention(q, k, v)
    assert torch.equal(actattn.attention(q, k, v, dropout_p=0.0), plain)
    for activation in ACTIVATIONS:
        out = actattn.attention(q, k, v, activation=activation, dropout_p=1.0)
        assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck(activation):
    q, k, v = random_qkv((1, 2, 9, 11, 4, 3), requires_grad=True)
    seed = seed_tensor(99)
    assert torch.autograd.gradcheck(
        lambda q, k, v: torch.ops.actattn.attention(
            q, k, v, activation=activation, causal=True, dropout_p=0.4, dropout_seed=seed
        ),
        (q, k, v),
    )


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_opcheck(activation):
    q, k, v = random_qkv((2, 2, 9, 11, 8, 4), requires_grad=True)
    options = dict(activation=activation, dropout_p=0.2, dropout_seed=seed_tensor(5))
    torch.library.opcheck(torch.ops.actattn.attention.default, (q, k, v), options)
    torch.library.opcheck(torch.ops.actattn.attention_with_lse.default, (q, k, v), options)


def test_compiles_fullgraph_and_matches_eager_for_a_given_seed():
    q, k, v = random_qkv((1, 2, 20, 20, 8, 8))
    seed = seed_tensor(42)

    def f(q, k, v, seed):
        return torch.ops.actattn.attention(q, k, v, activation="relu", dropout_p=0.3, dropout_seed=seed)

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(q, k, v, seed), f(q, k, v, seed), rtol=0, atol=0)
    # The public function draws the seed inside the graph.
    compiled = torch.compile(lambda q, k: weights_through_identity_values(q, k, activation="relu", dropout_p=0.5),
                             fullgraph=True)
    kept = compiled(q, k) != 0
    assert 0.3 < kept[weights_through_identity_values(q, k, activation="relu") != 0].double().mean().item() < 0.7


def test_low_precision_within_twice_the_composite_error():
    """bfloat16 with dropout: the kernel against float64 truth with the same mask, at most twice the
    error of the composite run in bfloat16."""
    seed = seed_tensor(2024)
    options = dict(activation="softmax", causal=True, dropout_p=0.2, dropout_seed=seed)
    inputs = random_qkv((2, 2, 64, 64, 32, 32))
    assert_within_twice_composite(
        lambda q, k, v: torch.ops.actattn.attention(q, k, v, **options),
        lambda q, k, v: reference.attention(q, k, v, **options),
        inputs,
        torch.bfloat16,
    )


@pytest.mark.parametrize(
    "options,error,match",
    [
        (dict(dropout_p=-0.1), ValueError, r"dropout_p must be in \[0, 1\], got -0.1"),
        (dict(dropout_p=1.5), ValueError, r"dropout_p must be in \[0, 1\]"),
        (dict(dropout_p=float("nan")), ValueError, r"dropout_p must be in \[0, 1\]"),
        (dict(dropout_p=0.1), ValueError, "needs dropout_seed"),
        (dict(dropout_p=0.1, dropout_seed=torch.tensor([1], dtype=torch.int32)), TypeError, "must be an int64"),
        (dict(dropout_p=0.1, dropout_seed=torch.tensor([1, 2])), ValueError, r"must have shape \(1,\)"),
    ],
)
def test_bad_dropout_arguments_raise(options, error, match):
    q, k, v = random_qkv((1, 1, 4, 4, 4, 4))
    with pytest.raises(error, match=match):
        torch.ops.actattn.attention(q, k, v, **options)


def test_multihead_attention_drops_in_training_only(device):
    torch.manual_seed(0)
    mha = MultiheadAttention(16, 4, dropout=0.5, batch_first=True, attention="relu").to(device, torch.float64)
    x = torch.randn(2, 10, 16, dtype=torch.float64, device=device)
    mha.eval()
    evaluated = mha(x, x, x, need_weights=False)[0]
    assert torch.equal(evaluated, mha(x, x, x, need_weights=False)[0])
    mha.train()
    trained = mha(x, x, x, need_weights=False)[0]
    assert not torch.allclose(trained, evaluated)
    trained.sum().backward()
    assert mha.in_proj_weight.grad.isfinite().all()


def test_linear_kinds_raise_for_dropout_with_the_reason():
    mha = MultiheadAttention(16, 4, dropout=0.1, batch_first=True, attention="linear-elu").train()
    x = torch.randn(2, 10, 16)
    with pytest.raises(NotImplementedError, match="linear attention .* never forms"):
        mha(x, x, x, need_weights=False)
    mha.eval()
    mha(x, x, x, need_weights=False)  # no dropout in evaluation: fine


def test_swapped_transformer_encoder_trains_with_its_default_dropout():
    """nn.TransformerEncoderLayer's dropout defaults to 0.1, attention dropout included."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True)
    model = swap_attention(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), "sigmoid").train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, target = torch.randn(8, 12, 16), torch.randn(8, 12, 16)
    losses = []
    for _ in range(30):
        loss = (model(x) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
