"""Using actattn where SDPA is used: grouped-query attention, the SDPA-shaped function, autocast, the
shared table of option names, and swap_attention's warning (issue #10)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import actattn
from actattn import reference
from conftest import assert_within_twice_composite, grads, random_like, random_qkv

ACTIVATIONS = list(actattn.SCORE_ACTIVATIONS)


def grouped_qkv(batch, heads, kv_heads, q_len, k_len, dim, dtype=torch.float64, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, dim, generator=gen, dtype=torch.float64)
    k = torch.randn(batch, kv_heads, k_len, dim, generator=gen, dtype=torch.float64)
    v = torch.randn(batch, kv_heads, k_len, dim + 1, generator=gen, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype).requires_grad_() for t in (q, k, v)]


# (heads, kv_heads): multi-query, grouped, and groups of one (ordinary attention through the same path).
@pytest.mark.parametrize("heads,kv_heads", [(4, 1), (6, 2), (3, 3)])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_grouped_query_attention_matches_repeated_heads(activation, causal, heads, kv_heads, device):
    q, k, v = grouped_qkv(2, heads, kv_heads, 37, 70, 16, device=device)
    lengths = torch.tensor([70, 41], device=device)
    out = actattn.attention(q, k, v, activation=activation, causal=causal, key_lengths=lengths)
    expected = reference.attention(q, k, v, activation, causal, key_lengths=lengths)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    grad_out = random_like(out)
    got, want = grads(out, (q, k, v), grad_out), grads(expected, (q, k, v), grad_out)
    for g, w, t, name in zip(got, want, (q, k, v), "qkv"):
        assert g.shape == t.shape, f"grad_{name} has the shape of {name}"
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12, msg=lambda m: f"grad_{name}: {m}")


def test_grouped_query_attention_gradcheck():
    q, k, v = grouped_qkv(1, 4, 2, 5, 7, 3)
    for activation in ACTIVATIONS:
        torch.autograd.gradcheck(
            lambda q, k, v: actattn.attention(q, k, v, activation=activation, causal=True), (q, k, v)
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_grouped_query_attention_low_precision(dtype, device):
    q, k, v = grouped_qkv(1, 4, 2, 70, 70, 32, device=device)
    assert_within_twice_composite(
        lambda q, k, v: actattn.attention(q, k, v, activation="sigmoid"),
        lambda q, k, v: reference.attention(q, k, v, "sigmoid"),
        (q, k, v),
        dtype,
    )


def test_grouped_query_attention_opcheck():
    q, k, v = grouped_qkv(1, 4, 2, 9, 11, 8)
    torch.library.opcheck(torch.ops.actattn.attention.default, (q, k, v), {"activation": "relu", "causal": True})


def test_grouped_heads_that_do_not_divide_raise():
    q, k, v = grouped_qkv(1, 4, 3, 5, 5, 8)
    with pytest.raises(ValueError, match=r"number of query heads \(4\) must be a multiple"):
        actattn.attention(q, k, v)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("feature_map", list(actattn.FEATURE_MAPS))
def test_grouped_query_linear_attention_keeps_one_state_per_kv_head(feature_map, causal, device):
    q, k, v = grouped_qkv(2, 6, 2, 70, 70, 8, device=device)
    lengths = torch.tensor([70, 45], device=device)
    state = None
    if causal:  # an initial state per key/value head, differentiable
        gen = torch.Generator().manual_seed(3)
        state = tuple(
            torch.rand(shape, generator=gen, dtype=torch.float64).to(device).requires_grad_()
            for shape in ((2, 2, 8, 9), (2, 2, 8))
        )
    normalize = feature_map != "identity"
    out, final = actattn.linear_attention(q, k, v, feature_map=feature_map, causal=causal, normalize=normalize,
                                          initial_state=state, return_state=True, key_lengths=lengths)
    expected, expected_final = reference.linear_attention(q, k, v, feature_map, causal, normalize,
                                                          initial_state=state, key_lengths=lengths)
    assert final.kv.shape == (2, 2, 8, 9) and final.normalizer.shape == (2, 2, 8), "one state per key/value head"
    for got, want in zip((out, *final), (expected, *expected_final)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-11)
    # Gradients through the output and the final state, into q, k, v and the initial state.
    inputs = [q, k, v, *(state or ())]
    seeds = [random_like(t, seed=i) for i, t in enumerate((out, *final))]
    got = grads([out, *final], inputs, seeds)
    want = grads([expected, *expected_final], inputs, seeds)
    for g, w, t in zip(got, want, inputs):
        assert g.shape == t.shape
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_grouped_query_linear_attention_shares_the_state_without_changing_bits(causal):
    # The CPU forward builds each key/value head's state once for the query heads of its group (split
    # across threads only when there are fewer groups than threads): the same bits as repeated heads,
    # whatever the thread count decides.
    q, k, v = grouped_qkv(1, 4, 1, 150, 150, 16, dtype=torch.float32)
    lengths = torch.tensor([131])
    with torch.no_grad():
        repeated, repeated_state = actattn.linear_attention(
            q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1), causal=causal, return_state=True,
            key_lengths=lengths)
        threads = torch.get_num_threads()
        try:
            for count in (1, 2):
                torch.set_num_threads(count)
                out, state = actattn.linear_attention(q, k, v, causal=causal, return_state=True, key_lengths=lengths)
                assert torch.equal(out, repeated), f"{count} thread(s): the output differs from repeated heads"
                assert torch.equal(state.kv, repeated_state.kv[:, :1]), f"{count} thread(s): the state differs"
                assert torch.equal(state.normalizer, repeated_state.normalizer[:, :1])
        finally:
            torch.set_num_threads(threads)


def test_grouped_query_linear_attention_gradcheck():
    q, k, v = grouped_qkv(1, 4, 2, 6, 6, 3)
    gen = torch.Generator().manual_seed(4)
    kv = torch.rand(1, 2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    z = torch.rand(1, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)

    def run(q, k, v, kv, z):
        out, state = actattn.linear_attention(q, k, v, causal=True, initial_state=(kv, z), return_state=True)
        return out, state.kv, state.normalizer

    torch.autograd.gradcheck(run, (q, k, v, kv, z))


def test_grouped_query_linear_attention_opcheck():
    q, k, v = grouped_qkv(1, 4, 2, 9, 9, 8)
    torch.library.opcheck(torch.ops.actattn.linear_attention.default, (q, k, v), {"causal": True})


# SDPA's shapes: (N, ..., H, L, E), (N, L, E) and (L, E).
@pytest.mark.parametrize(
    "q_shape,kv_shape",
    [((2, 3, 10, 8), (2, 3, 12, 8)), ((2, 2, 3, 10, 8), (2, 2, 3, 12, 8)), ((2, 10, 8), (2, 12, 8)), ((10, 8), (12, 8))],
    ids=["4d", "5d", "3d", "2d"],
)
@pytest.mark.parametrize("is_causal", [False, True])
def test_sdpa_signature_and_shapes_match_torch(q_shape, kv_shape, is_causal, device):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(s, generator=gen, dtype=torch.float64).to(device) for s in (q_shape, kv_shape, kv_shape))
    out = actattn.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    assert out.shape == q.shape
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=is_causal))
    positional = (None, 0.0, is_causal)  # attn_mask, dropout_p, is_causal, in SDPA's order
    out = actattn.scaled_dot_product_attention(q, k, v, *positional, scale=0.3)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, *positional, scale=0.3))


def test_sdpa_grouped_query_attention_matches_torch(device):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 8, 10, 16, generator=gen, dtype=torch.float64, device="cpu").to(device).requires_grad_()
    k = torch.randn(2, 2, 10, 16, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    v = torch.randn(2, 2, 10, 16, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    out = actattn.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(out, expected)
    grad_out = random_like(out)
    for g, w in zip(grads(out, (q, k, v), grad_out), grads(expected, (q, k, v), grad_out)):
        torch.testing.assert_close(g, w)
    with pytest.raises(ValueError, match="enable_gqa=True"):
        actattn.scaled_dot_product_attention(q, k, v)


def test_sdpa_other_activations_are_attention():
    q, k, v = random_qkv((2, 2, 9, 9, 4, 4))
    lengths = torch.tensor([9, 5])
    for activation in ("sigmoid", "relu"):
        out = actattn.scaled_dot_product_attention(q, k, v, is_causal=True, activation=activation, key_lengths=lengths)
        torch.testing.assert_close(out, reference.attention(q, k, v, activation, True, key_lengths=lengths))


@pytest.mark.parametrize(
    "kwargs,name",
    [({"attn_mask": torch.ones(9, 9, dtype=torch.bool)}, "attn_mask")],
)
def test_sdpa_names_what_it_cannot_do(kwargs, name):
    q, k, v = random_qkv((1, 2, 9, 9, 4, 4))
    with pytest.raises(NotImplementedError, match=name):
        actattn.scaled_dot_product_attention(q, k, v, **kwargs)


def test_sdpa_dropout_is_attentions_for_the_same_generator_state(device):
    q, k, v = random_qkv((2, 3, 9, 9, 4, 4), device=device)
    torch.manual_seed(5)
    sdpa = actattn.scaled_dot_product_attention(q, k, v, dropout_p=0.3, is_causal=True, activation="sigmoid")
    torch.manual_seed(5)
    direct = actattn.attention(q, k, v, activation="sigmoid", causal=True, dropout_p=0.3)
    assert torch.equal(sdpa, direct)
    assert not torch.equal(sdpa, actattn.attention(q, k, v, activation="sigmoid", causal=True))


def test_a_grouped_query_model_with_dropout_trains_under_bf16_autocast():
    """The issue's 'done when': F.scaled_dot_product_attention replaced in a GQA layer with dropout,
    trained under bfloat16 autocast."""

    class GroupedQueryLayer(nn.Module):
        def __init__(self, dim=32, heads=4, kv_heads=2):
            super().__init__()
            self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
            self.q = nn.Linear(dim, dim)
            self.kv = nn.Linear(dim, 2 * kv_heads * self.head_dim)
            self.out = nn.Linear(dim, dim)

        def forward(self, x):
            b, n, _ = x.shape
            q = self.q(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
            k, v = self.kv(x).view(b, n, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            y = actattn.scaled_dot_product_attention(
                q, k, v, dropout_p=0.1 if self.training else 0.0, is_causal=True, enable_gqa=True,
                activation="relu",
            )
            return self.out(y.transpose(1, 2).reshape(b, n, -1))

    torch.manual_seed(0)
    model = GroupedQueryLayer().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, target = torch.randn(4, 16, 32), torch.randn(4, 16, 32)
    losses = []
    for _ in range(25):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
            assert y.dtype == torch.bfloat16
        loss = (y.float() - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad.isfinite().all() for p in model.parameters())
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])


def test_sdpa_rejects_mismatched_batch_dims():
    q, k, v = random_qkv((2, 2, 9, 9, 4, 4))
    with pytest.raises(ValueError, match="same batch dimensions"):
        actattn.scaled_dot_product_attention(q, k[:1], v[:1])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_autocast_casts_like_sdpa(activation):
    q, k, v = (t.float().requires_grad_() for t in random_qkv((1, 2, 40, 40, 16, 16)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = actattn.attention(q, k, v, activation=activation, causal=True)
        expected = reference.attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), activation, True)
        sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert out.dtype == torch.bfloat16 and sdpa.dtype == torch.bfloat16
    exact = reference.attention(q.bfloat16().double(), k.bfloat16().double(), v.bfloat16().double(), activation, True)
    assert (out.double() - exact).abs().max() <= 2 * (expected.double() - exact).abs().max() + 1e-6
    out.float().sum().backward()
    assert q.grad.dtype == torch.float32 and k.grad is not None and v.grad is not None


def test_autocast_accepts_mixed_input_dtypes():
    q, k, v = random_qkv((1, 2, 8, 8, 16, 16), dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = actattn.attention(q.bfloat16(), k, v)
        linear_out, state = actattn.linear_attention(q, k.bfloat16(), v, causal=True, return_state=True)
    assert out.dtype == linear_out.dtype == torch.bfloat16
    assert state.kv.dtype == state.normalizer.dtype == torch.float32, "the state keeps its float32 accumulation"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actattn.linear_attention(q, k, v, causal=True, initial_state=state)


def test_autocast_leaves_float64_alone():
    q, k, v = random_qkv((1, 1, 4, 4, 8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert actattn.attention(q, k, v).dtype == torch.float64


def test_option_names_come_from_one_table():
    assert actattn.SCORE_ACTIVATIONS == ("softmax", "sigmoid", "relu")
    assert actattn.FEATURE_MAPS == ("identity", "relu", "elu")
    q, k, v = random_qkv((1, 1, 4, 4, 8, 8))
    with pytest.raises(ValueError, match="activation must be one of 'softmax', 'sigmoid', 'relu'; got 'tanh'"):
        actattn.attention(q, k, v, activation="tanh")
    with pytest.raises(ValueError, match="feature_map must be one of 'identity', 'relu', 'elu'; got 'exp'"):
        actattn.linear_attention(q, k, v, feature_map="exp")


class OwnAttention(nn.Module):
    """A block that calls F.scaled_dot_product_attention itself, as Hugging Face models do."""

    def forward(self, x):
        return F.scaled_dot_product_attention(x, x, x)


def test_swap_attention_warns_when_nothing_is_swapped():
    with pytest.warns(UserWarning, match="no torch.nn.MultiheadAttention"):
        actattn.swap_attention(OwnAttention(), "sigmoid")
    with pytest.raises(ValueError, match="no torch.nn.MultiheadAttention"):
        actattn.swap_attention(OwnAttention(), "sigmoid", strict=True)
    layer = nn.TransformerEncoderLayer(16, 2, batch_first=True)
    swapped = actattn.swap_attention(layer, "sigmoid", strict=True)
    assert isinstance(swapped.self_attn, actattn.nn.MultiheadAttention)
