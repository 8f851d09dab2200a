"""The ops as torch sees them: schemas, fake tensors, autograd registration, torch.compile."""

import pytest
import torch

import actattn
from conftest import random_qkv

ops = torch.ops.actattn


def attention_cases(device):
    q, k, v = random_qkv((2, 2, 9, 11, 4, 3), device=device, requires_grad=True)
    yield (q, k, v), {"activation": "softmax", "causal": False}
    yield (q, k, v), {"activation": "softmax", "causal": True}
    yield (q, k, v), {"activation": "sigmoid", "causal": True, "bias": -1.0}
    yield (q, k, v), {"activation": "relu", "causal": False, "scale": 0.5, "divisor": 4.0}
    yield (q, k, v), {"activation": "sigmoid", "causal": False, "key_lengths": torch.tensor([11, 4], device=device)}
    yield (q, k, v), {"activation": "relu", "causal": True, "causal_alignment": "bottom_right"}
    q_gqa = q.detach()[:, :1].repeat(1, 4, 1, 1).requires_grad_()  # 4 query heads on 2 key/value heads
    yield (q_gqa, k, v), {"activation": "softmax", "causal": True, "causal_alignment": "bottom_right"}


def linear_cases(device):
    q, k, v = random_qkv((2, 2, 70, 70, 4, 3), device=device, requires_grad=True)
    kv = torch.randn(2, 2, 4, 3, dtype=torch.float64, device=device, requires_grad=True)
    z = torch.rand(2, 2, 4, dtype=torch.float64, device=device, requires_grad=True)
    yield (q, k, v), {"feature_map": "elu", "causal": False}
    yield (q, k, v), {"feature_map": "relu", "causal": True, "normalize": False}
    yield (q, k, v), {"feature_map": "identity", "causal": True, "eps": 0.1, "scale": 0.5}
    yield (q, k, v), {"feature_map": "elu", "causal": True, "initial_state": kv, "initial_normalizer": z}
    yield (q, k, v), {"feature_map": "relu", "causal": True, "key_lengths": torch.tensor([70, 33], device=device)}


def test_opcheck_attention(device):
    for args, kwargs in attention_cases(device):
        torch.library.opcheck(ops.attention.default, args, kwargs)


def test_opcheck_attention_with_lse(device):
    for args, kwargs in attention_cases(device):
        if kwargs["activation"] == "softmax":
            torch.library.opcheck(ops.attention_with_lse.default, args, kwargs)


def test_opcheck_linear_attention(device):
    for args, kwargs in linear_cases(device):
        torch.library.opcheck(ops.linear_attention.default, args, kwargs)


def test_opcheck_forward_and_backward_ops(device):
    q, k, v = random_qkv((1, 2, 9, 11, 4, 3), device=device)
    lengths, seed = torch.tensor([7], device=device), torch.tensor([11], device=device)
    for activation, alignment, dropout_p, window, key_lengths in (
        ("softmax", "top_left", 0.0, (-1, -1), None),
        ("relu", "bottom_right", 0.25, (-1, -1), lengths),
        ("softmax", "top_left", 0.5, (3, 0), None),
    ):
        args = (q, k, v, activation, True, None, None, None, alignment, dropout_p, *window, key_lengths, seed)
        torch.library.opcheck(ops._attention_forward.default, args)
        out, lse = ops._attention_forward(*args)
        grad_args = (torch.ones_like(out), q, k, v, out, lse, *args[3:])
        for mask in ([True, True, True], [True, False, False], [False, False, True]):
            torch.library.opcheck(ops._attention_backward.default, (*grad_args, mask))
    q, k, v = random_qkv((1, 2, 9, 9, 4, 3), device=device)
    args = (q, k, v, "elu", True, True, 1e-6, None, None, None, lengths)
    torch.library.opcheck(ops._linear_attention_forward.default, args)
    out, kv, z, den = ops._linear_attention_forward(*args)
    grad_args = (torch.ones_like(out), torch.ones_like(kv), None, q, k, v, out, den, *args[3:])
    for mask in ([True, True, True], [True, False, False], [False, True, True]):
        torch.library.opcheck(ops._linear_attention_backward.default, (*grad_args, mask))
    # Non-causal, with the forward's final state handed to the backward (what autograd does).
    args = (q, k, v, "elu", False, True, 1e-6, None, None, None, lengths)
    out, kv, z, den = ops._linear_attention_forward(*args)
    grad_args = (torch.ones_like(out), None, None, q, k, v, out, den, *args[3:], [True, True, True])
    torch.library.opcheck(ops._linear_attention_backward.default, (*grad_args, kv, z))


def test_double_backward_raises_instead_of_being_wrong(device):
    q, k, v = random_qkv((1, 1, 4, 4, 2, 2), device=device, requires_grad=True)
    out = actattn.attention(q, k, v)
    (dq,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        dq.sum().backward()


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_compile_fullgraph(dynamic, device):
    def model(q, k, v):
        quadratic = actattn.attention(q, k, v, activation="sigmoid", causal=True)
        linear, state = actattn.linear_attention(q, k, v, causal=True, return_state=True)
        return (quadratic * linear).sum() + state.kv.sum()

    compiled = torch.compile(model, fullgraph=True, dynamic=dynamic, backend="aot_eager")
    for n in (16, 24):  # a second length exercises recompilation / symbolic shapes
        q, k, v = random_qkv((2, 2, n, n, 8, 8), dtype=torch.float32, device=device, requires_grad=True)
        expected = model(q, k, v)
        expected_grads = torch.autograd.grad(expected, (q, k, v))
        got = compiled(q, k, v)
        torch.testing.assert_close(got, expected)
        for g, e in zip(torch.autograd.grad(got, (q, k, v)), expected_grads):
            torch.testing.assert_close(g, e)


def test_compile_with_inductor(device):
    def model(q, k, v):
        return actattn.attention(q, k, v, activation="relu") + actattn.linear_attention(q, k, v, feature_map="relu")

    compiled = torch.compile(model, fullgraph=True)
    q, k, v = random_qkv((1, 2, 32, 32, 8, 8), dtype=torch.float32, device=device, requires_grad=True)
    got = compiled(q, k, v)
    torch.testing.assert_close(got, model(q, k, v))
    got.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))
