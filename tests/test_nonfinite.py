"""NaN and inf in the inputs reach the outputs and gradients exactly where torch's composite puts them.

A kernel that turns a NaN into a finite number (relu written as ``x > 0 ? x : 0``) lets a diverged
model train on finite-looking numbers, so every activation and feature map is checked, forward and
backward, with one non-finite element in q, k or v. Non-causal and unpadded, so that the reference's
masking (``probs * visible``, where NaN * 0 is NaN) cannot add NaNs the kernels rightly avoid.
"""

import pytest
import torch

import actattn
from actattn import reference
from conftest import grads, random_like, random_qkv

SHAPE = (1, 2, 6, 5, 4, 3)
POSITIONS = {"q": (0, 1, 2, 1), "k": (0, 0, 3, 2), "v": (0, 1, 4, 0)}


def poisoned(which, value):
    q, k, v = random_qkv(SHAPE)
    tensors = {"q": q, "k": k, "v": v}
    tensors[which][POSITIONS[which]] = value
    return [t.requires_grad_() for t in (q, k, v)]


def assert_same_pattern(kernel, composite, exact_nan):
    """Non-finite where torch is non-finite. For NaN inputs the NaN positions match exactly; an inf input
    can end as inf or NaN depending on the order in which +inf and -inf terms meet (as between torch's
    own backends), so for it only the non-finite positions must match."""
    for name, got, want in zip(("out", "grad_q", "grad_k", "grad_v"), kernel["results"], composite["results"]):
        assert torch.equal(got.isfinite(), want.isfinite()), f"{name}: non-finite positions differ from torch's"
        if exact_nan:
            assert torch.equal(got.isnan(), want.isnan()), f"{name}: NaN positions differ from torch's"


def run(fn, inputs):
    out = fn(*inputs)
    grad_out = random_like(out)
    return {"results": [out.detach(), *grads(out, inputs, grad_out)]}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("which", ["q", "k", "v"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "relu"])
def test_attention_propagates_like_torch(activation, which, value):
    inputs = poisoned(which, value)
    kernel = run(lambda q, k, v: actattn.attention(q, k, v, activation=activation), inputs)
    composite = run(lambda q, k, v: reference.attention(q, k, v, activation), inputs)
    assert_same_pattern(kernel, composite, exact_nan=value != value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("which", ["q", "k", "v"])
@pytest.mark.parametrize("feature_map", ["identity", "relu", "elu"])
@pytest.mark.parametrize("normalize", [True, False], ids=["normalized", "unnormalized"])
def test_linear_attention_propagates_like_torch(feature_map, normalize, which, value):
    inputs = poisoned(which, value)
    kernel = run(lambda q, k, v: actattn.linear_attention(q, k, v, feature_map=feature_map, normalize=normalize), inputs)
    composite = run(lambda q, k, v: reference.linear_attention(q, k, v, feature_map, normalize=normalize)[0], inputs)
    assert_same_pattern(kernel, composite, exact_nan=value != value)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "relu"])
def test_a_nan_query_gives_a_nan_output_row(activation):
    # The defect this file was written for: relu scores turned a NaN query into a zero output row.
    q, k, v = poisoned("q", float("nan"))
    out = actattn.attention(q, k, v, activation=activation)
    assert out[POSITIONS["q"][:3]].isnan().all()


@pytest.mark.parametrize("feature_map", ["identity", "relu", "elu"])
def test_a_nan_key_reaches_every_output_of_its_head(feature_map):
    q, k, v = poisoned("k", float("nan"))
    out = actattn.linear_attention(q, k, v, feature_map=feature_map)
    batch, head = POSITIONS["k"][:2]
    assert out[batch, head].isnan().all()


CAUSAL_OPS = {
    **{f"attention {a}": (lambda a: lambda q, k, v: actattn.attention(q, k, v, activation=a, causal=True))(a)
       for a in ("softmax", "sigmoid", "relu")},
    **{f"linear {m}": (lambda m: lambda q, k, v: actattn.linear_attention(q, k, v, feature_map=m, causal=True))(m)
       for m in ("identity", "relu", "elu")},
}


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("which", ["k", "v"])
@pytest.mark.parametrize("name", CAUSAL_OPS)
def test_a_causal_row_never_sees_a_later_non_finite_key(name, which, value):
    # Kernels that compute a whole register block of scores and mask afterwards must assign the masked
    # weights, never multiply a later key's value by zero (0 * inf is NaN). 130 rows: three chunks of 64;
    # the bad key sits mid-block, inside the second chunk.
    q, k, v = random_qkv((1, 2, 130, 130, 8, 8))
    position = 70
    {"k": k, "v": v}[which][:, :, position] = value
    out = CAUSAL_OPS[name](q, k, v)
    assert out[:, :, :position].isfinite().all()
    assert not out[:, :, position:].isfinite().all()
