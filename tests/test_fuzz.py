"""Property-based fuzzing of both ops against reference.py, forward and backward.

Hypothesis draws shapes (0 and 1 sizes, Nq != Nk, odd head dims), float64 or float32, layouts
(contiguous, a (B, N, H, D) transpose, a slice of a wider tensor, a stride-0 expansion over heads),
every activation / feature map / causal / normalise / state / key-length option, and any subset of
q, k, v requiring grad. CI runs a fixed-seed profile of 200 examples per op; ACTATTN_FUZZ=long runs
ACTATTN_FUZZ_EXAMPLES (default 5000) random ones. A failure prints the drawn example and a
``@reproduce_failure`` line that replays it.
"""

import os

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import actattn  # noqa: E402
from actattn import reference  # noqa: E402

settings.register_profile("ci", max_examples=200, derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=int(os.environ.get("ACTATTN_FUZZ_EXAMPLES", "5000")),
                          deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("ACTATTN_FUZZ", "ci"))

TOLERANCES = {torch.float64: dict(rtol=1e-7, atol=1e-9), torch.float32: dict(rtol=2e-3, atol=2e-4)}
LAYOUTS = ["contiguous", "transposed", "sliced", "expanded"]


def laid_out(x, layout):
    """x (B, H, N, D) as a view with the given strides; the values are x's."""
    if layout == "transposed":
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    if layout == "sliced":
        wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1] + 1, dtype=x.dtype)
        wide[..., 1 : 1 + 2 * x.shape[-1] : 2] = x  # every other column: strided rows, copied by the op
        return wide[..., 1 : 1 + 2 * x.shape[-1] : 2]
    if layout == "expanded":
        return x[:, :1].expand_as(x)  # one head's data seen by every head (stride 0)
    return x


@st.composite
def inputs(draw, linear):
    batch = draw(st.integers(0, 2))
    heads = draw(st.integers(1, 3))
    q_len = draw(st.sampled_from([0, 1, 2, 5, 17, 64, 65, 130]))
    causal = draw(st.booleans())
    k_len = q_len if linear and causal else draw(st.sampled_from([0, 1, 3, 16, 63, 64, 70]))
    qk_dim = draw(st.sampled_from([1, 2, 3, 7, 16, 33]))
    v_dim = draw(st.sampled_from([1, 4, 5, 16]))
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    tensors = []
    for rows, dim in ((q_len, qk_dim), (k_len, qk_dim), (k_len, v_dim)):
        x = torch.randn(batch, heads, rows, dim, generator=gen, dtype=torch.float64)
        tensors.append(laid_out(x, draw(st.sampled_from(LAYOUTS))))
    with_grad = draw(st.lists(st.booleans(), min_size=3, max_size=3))
    lengths = None
    if batch and draw(st.booleans()):
        lengths = torch.tensor(draw(st.lists(st.integers(-1, k_len + 2), min_size=batch, max_size=batch)))
    return dict(tensors=tensors, causal=causal, dtype=dtype, with_grad=with_grad, key_lengths=lengths, seed=seed)


def leaves(case):
    """The drawn tensors in the drawn dtype as leaves (grad where drawn), and the same in float64."""
    low = [t.to(case["dtype"]).requires_grad_(g) for t, g in zip(case["tensors"], case["with_grad"])]
    exact = [t.detach().double().requires_grad_(g) for t, g in zip(low, case["with_grad"])]
    return low, exact


def compare(got, want, inputs_low, inputs_exact, dtype):
    tol = TOLERANCES[dtype]
    for name, g, w in zip(("output", "final state", "final normalizer"), got, want):
        torch.testing.assert_close(g.double(), w.detach(), **tol, msg=lambda m: f"{name}: {m}")
    differentiable = [i for i, t in enumerate(inputs_low) if t.requires_grad]
    if not differentiable or got[0].numel() == 0:
        return
    # Outputs that depend on no differentiable input (the state's normalizer when only v requires grad).
    pairs = [(g, w) for g, w in zip(got, want) if w.requires_grad]
    got, want = [g for g, _ in pairs], [w for _, w in pairs]
    gen = torch.Generator().manual_seed(1)
    grad_outputs = [torch.randn(w.shape, generator=gen, dtype=torch.float64) for w in want]
    got_grads = torch.autograd.grad(got, [inputs_low[i] for i in differentiable],
                                    [g.to(o.dtype) for g, o in zip(grad_outputs, got)], allow_unused=True)
    want_grads = torch.autograd.grad(want, [inputs_exact[i] for i in differentiable], grad_outputs,
                                     allow_unused=True)
    for i, g, w in zip(differentiable, got_grads, want_grads):
        g = torch.zeros_like(inputs_exact[i]) if g is None else g.double()
        w = torch.zeros_like(inputs_exact[i]) if w is None else w
        torch.testing.assert_close(g, w, **tol, msg=lambda m: f"grad of {'qkv'[i]}: {m}")


@given(case=inputs(linear=False), activation=st.sampled_from(["softmax", "sigmoid", "relu"]),
       dropout_p=st.sampled_from([0.0, 0.0, 0.3, 1.0]), dropout_seed=st.integers(-(2**63), 2**63 - 1),
       window_left=st.sampled_from([-1, -1, 0, 3, 70]), window_right=st.sampled_from([-1, -1, 0, 5, 64]),
       bottom_right=st.booleans())
def test_attention_matches_reference(case, activation, dropout_p, dropout_seed, window_left, window_right,
                                     bottom_right):
    low, exact = leaves(case)
    options = dict(activation=activation, causal=case["causal"], key_lengths=case["key_lengths"],
                   dropout_p=dropout_p, dropout_seed=torch.tensor([dropout_seed]), window_left=window_left,
                   window_right=-1 if case["causal"] else window_right,
                   causal_alignment="bottom_right" if bottom_right else "top_left")
    got = torch.ops.actattn.attention(*low, **options)
    want = reference.attention(*exact, **options)
    compare([got], [want], low, exact, case["dtype"])


@given(case=inputs(linear=True), feature_map=st.sampled_from(["identity", "relu", "elu"]),
       normalize=st.booleans(), with_state=st.booleans())
def test_linear_attention_matches_reference(case, feature_map, normalize, with_state):
    if normalize and feature_map == "identity":
        # a.z can come arbitrarily close to 0 on random data (ill-conditioned for any implementation).
        case["tensors"][:2] = [t.abs() for t in case["tensors"][:2]]
    low, exact = leaves(case)
    batch, heads, _, qk_dim = low[0].shape
    state = None
    if with_state and case["causal"]:
        gen = torch.Generator().manual_seed(case["seed"] + 1)
        state = (torch.rand(batch, heads, qk_dim, low[2].shape[-1], generator=gen, dtype=torch.float64),
                 torch.rand(batch, heads, qk_dim, generator=gen, dtype=torch.float64))
    accumulation = torch.float64 if case["dtype"] == torch.float64 else torch.float32
    options = dict(feature_map=feature_map, causal=case["causal"], normalize=normalize,
                   key_lengths=case["key_lengths"], return_state=True)
    got_out, got_state = actattn.linear_attention(
        *low, initial_state=None if state is None else tuple(s.to(accumulation) for s in state), **options)
    want_out, want_state = reference.linear_attention(
        *exact, feature_map, case["causal"], normalize, initial_state=state, key_lengths=case["key_lengths"])
    compare([got_out, *got_state], [want_out, *want_state], low, exact, case["dtype"])
