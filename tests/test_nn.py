"""actattn.nn: the drop-in MultiheadAttention, swap_attention, and the building blocks."""

import pytest
import torch
from torch import nn

import actattn
from actattn.nn import KINDS, DecoderLM, MultiheadAttention, swap_attention



def pair(device, **kwargs):
    """A torch MultiheadAttention and an actattn one (softmax) with the same weights, float64."""
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(16, 4, **kwargs).to(device, torch.float64)
    ours = MultiheadAttention.from_torch(reference, "softmax")
    return reference, ours


def inputs(device, batch_first, lengths=(9, 9), kdim=16, vdim=16):
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 7, 16, generator=gen, dtype=torch.float64)
    k = torch.randn(2, max(lengths), kdim, generator=gen, dtype=torch.float64)
    v = torch.randn(2, max(lengths), vdim, generator=gen, dtype=torch.float64)
    if not batch_first:
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    return [t.to(device).requires_grad_() for t in (q, k, v)]


@pytest.mark.parametrize("batch_first", [True, False])
def test_matches_torch_with_padding_and_weights(batch_first, device):
    reference, ours = pair(device, batch_first=batch_first)
    q, k, v = inputs(device, batch_first)
    padding = torch.arange(9, device=device) >= torch.tensor([[9], [5]], device=device)  # right padding
    want, want_weights = reference(q, k, v, key_padding_mask=padding, need_weights=True)
    got, got_weights = ours(q, k, v, key_padding_mask=padding, need_weights=True)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_weights, want_weights)
    grad = torch.randn_like(want)
    for g, w in zip(torch.autograd.grad(got, (q, k, v), grad), torch.autograd.grad(want, (q, k, v), grad)):
        torch.testing.assert_close(g, w)


def test_matches_torch_causal_kdim_vdim_unbatched(device):
    reference, ours = pair(device, batch_first=True, kdim=6, vdim=5)
    q, k, v = inputs(device, True, kdim=6, vdim=5)
    mask = nn.Transformer.generate_square_subsequent_mask(7, device=device, dtype=torch.float64)[:, :7]
    q7, k7, v7 = q, k[:, :7], v[:, :7]
    want, _ = reference(q7, k7, v7, attn_mask=mask, need_weights=False)
    got, weights = ours(q7, k7, v7, attn_mask=mask, need_weights=False)
    assert weights is None
    torch.testing.assert_close(got, want)
    got_causal, _ = ours(q7, k7, v7, is_causal=True)
    torch.testing.assert_close(got_causal, want)
    want_single, w_single = reference(q[0], k[0], v[0], need_weights=True, average_attn_weights=False)
    got_single, g_single = ours(q[0], k[0], v[0], need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(got_single, want_single)
    torch.testing.assert_close(g_single, w_single)


@pytest.mark.parametrize("attention", list(KINDS))
def test_padding_for_every_kind(attention, device):
    torch.manual_seed(0)
    module = MultiheadAttention(16, 4, batch_first=True, attention=attention).to(device, torch.float64)
    q, k, v = inputs(device, True)
    padding = torch.arange(9, device=device) >= torch.tensor([[9], [4]], device=device)
    out, _ = module(q, k, v, key_padding_mask=padding)
    alone, _ = module(q[1:], k[1:, :4], v[1:, :4])
    torch.testing.assert_close(out[1:], alone)
    # Padding keys get no gradient.
    (dk,) = torch.autograd.grad(out.sum(), k)
    assert torch.equal(dk[1, 4:], torch.zeros_like(dk[1, 4:]))


@pytest.mark.parametrize("attention", list(KINDS))
def test_weights_reproduce_the_output(attention, device):
    torch.manual_seed(0)
    module = MultiheadAttention(16, 2, batch_first=True, attention=attention).to(device, torch.float64)
    x = torch.randn(2, 7, 16, dtype=torch.float64, device=device)
    out, weights = module(x, x, x, need_weights=True, average_attn_weights=False, is_causal=True)
    v = nn.functional.linear(x, *[t.split(16)[2] for t in (module.in_proj_weight, module.in_proj_bias)])
    v = v.view(2, 7, 2, 8).transpose(1, 2)
    manual = module.out_proj((weights @ v).transpose(1, 2).reshape(2, 7, 16))
    torch.testing.assert_close(out, manual)


@pytest.mark.parametrize("batch_first", [True, False])
def test_swap_on_transformer_encoder(batch_first, device):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0, batch_first=batch_first)
    encoder = nn.TransformerEncoder(layer, num_layers=2).to(device, torch.float64)  # nested-tensor path on
    x = torch.randn(3, 10, 16, dtype=torch.float64, device=device)
    if not batch_first:
        x = x.transpose(0, 1)
    padding = torch.arange(10, device=device) >= torch.tensor([[10], [6], [8]], device=device)
    encoder.eval()
    with torch.no_grad():  # the conditions of torch's fused fast path, which must not bypass the swap
        want = encoder(x, src_key_padding_mask=padding)
    swapped = swap_attention(encoder, "softmax")
    assert all(isinstance(layer.self_attn, MultiheadAttention) for layer in swapped.layers)
    with torch.no_grad():
        got = swapped(x, src_key_padding_mask=padding)
    valid = ~padding if batch_first else ~padding.T
    torch.testing.assert_close(got[valid], want[valid])
    # Another kind really changes what the model computes.
    swapped_sigmoid = swap_attention(swapped, "sigmoid")
    with torch.no_grad():
        assert not torch.allclose(swapped_sigmoid(x, src_key_padding_mask=padding)[valid], want[valid])


@pytest.mark.parametrize("attention", list(KINDS))
def test_decoder_lm_is_causal_and_trains(attention, device):
    torch.manual_seed(0)
    model = DecoderLM(vocab_size=11, dim=32, heads=4, layers=2, max_len=16, attention=attention).to(device)
    tokens = torch.randint(0, 11, (2, 12), device=device)
    logits = model(tokens)
    assert logits.shape == (2, 12, 11)
    changed = tokens.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 11
    torch.testing.assert_close(model(changed)[:, :8], logits[:, :8])  # the future does not leak
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_unsupported_uses_raise(device):
    module = MultiheadAttention(16, 4, batch_first=True).to(device, torch.float64)
    q, k, v = inputs(device, True)
    with pytest.raises(NotImplementedError, match="right padding"):
        module(q, k, v, key_padding_mask=torch.arange(9, device=device) < torch.tensor([[0], [2]], device=device))
    with pytest.raises(NotImplementedError, match="causal mask"):
        module(q, k[:, :7], v[:, :7], attn_mask=torch.rand(7, 7, device=device) > 0.5)
    with pytest.raises(NotImplementedError, match="additive score biases"):
        module(q, k[:, :7], v[:, :7], attn_mask=torch.rand(7, 7, device=device, dtype=torch.float64))
    with pytest.raises(ValueError, match="attention must be one of"):
        MultiheadAttention(16, 4, attention="tanh")
    with pytest.raises(NotImplementedError, match="add_bias_kv"):
        MultiheadAttention(16, 4, add_bias_kv=True)
    training = MultiheadAttention(16, 4, dropout=0.1, batch_first=True, attention="linear-elu")
    training = training.to(device, torch.float64).train()
    with pytest.raises(NotImplementedError, match="attention dropout"):
        training(q, k, v)
    training.eval()
    training(q, k, v)  # dropout is inactive in eval mode: fine


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_compiles_fullgraph_with_masks(mask_dtype):
    torch.manual_seed(0)
    module = MultiheadAttention(16, 2, batch_first=True, attention="sigmoid")
    x = torch.randn(2, 9, 16)
    padding = torch.arange(9) >= torch.tensor([[9], [6]])
    causal = torch.ones(9, 9, dtype=torch.bool).triu(1)
    if mask_dtype == torch.float32:
        padding, causal = (torch.zeros(m.shape).masked_fill(m, float("-inf")) for m in (padding, causal))

    def run(x, padding, causal):
        return module(x, x, x, key_padding_mask=padding, attn_mask=causal, is_causal=True, need_weights=False)[0]

    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, padding, causal), run(x, padding, causal))
    left_padding = padding.flip(-1)  # not right padding: the in-graph check raises when the graph runs
    with pytest.raises(RuntimeError, match="right padding"):
        compiled(x, left_padding, causal)


def test_need_weights_defaults_to_true_as_torchs():
    out, weights = MultiheadAttention(8, 2, batch_first=True)(*(torch.randn(1, 3, 8),) * 3)
    assert weights is not None and weights.shape == (1, 3, 3)
