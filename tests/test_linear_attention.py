"""Linear attention (identity, relu, elu+1; causal or not; normalised or not; with state)."""

import pytest
import torch

import actattn
from actattn import reference
from conftest import (
    assert_compact_tiles_give_the_same_bits, assert_within_twice_composite, grads,
    grouped_random_qkv, random_like, random_qkv,
)

FEATURE_MAPS = ["identity", "relu", "elu"]

# (B, H, Nq, Nk, Dk, Dv): chunk edges (the kernels chunk by 64), Dk != Dv, D from 1 to 256.
CAUSAL_SHAPES = [
    (1, 1, 1, 1, 1, 1),
    (2, 2, 2, 2, 3, 3),
    (1, 2, 63, 63, 16, 16),
    (1, 1, 64, 64, 64, 64),
    (2, 1, 65, 65, 96, 96),
    (1, 1, 257, 257, 128, 128),
    (1, 1, 65, 65, 256, 256),
    (1, 1, 130, 130, 64, 96),
]
# Non-causal calls may also have Nq != Nk.
FULL_SHAPES = CAUSAL_SHAPES + [(1, 2, 63, 130, 16, 32), (1, 1, 130, 63, 3, 1)]


def positive_inputs(feature_map, q, k):
    # With identity and normalisation the denominator a.z can come arbitrarily close to zero on random
    # data, and the result is then ill-conditioned for any implementation; keep q.k positive there.
    if feature_map == "identity":
        return q.abs(), k.abs()
    return q, k


def check_against_reference(shape, feature_map, causal, normalize, device, with_state=False, **options):
    q, k, v = random_qkv(shape, device=device)
    if normalize:
        q, k = positive_inputs(feature_map, q, k)
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    state = None
    if with_state:
        gen = torch.Generator().manual_seed(7)
        batch, heads, _, _, qk_dim, v_dim = shape
        kv = torch.randn(batch, heads, qk_dim, v_dim, generator=gen, dtype=torch.float64)
        z = torch.rand(batch, heads, qk_dim, generator=gen, dtype=torch.float64)
        state = (kv.to(device).requires_grad_(), z.to(device).requires_grad_())
        leaves += list(state)
    q, k, v = leaves[:3]
    out, final = actattn.linear_attention(
        q, k, v, feature_map=feature_map, causal=causal, normalize=normalize, initial_state=state,
        return_state=True, **options
    )
    expected, expected_final = reference.linear_attention(
        q, k, v, feature_map, causal, normalize, initial_state=state, **options
    )
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(tuple(final), expected_final, rtol=1e-9, atol=1e-11)
    grad_outputs = [random_like(out, seed=1), random_like(final.kv, seed=2), random_like(final.normalizer, seed=3)]
    got = grads([out, *final], leaves, grad_outputs)
    want = grads([expected, *expected_final], leaves, grad_outputs)
    for g, w, name in zip(got, want, ["q", "k", "v", "initial kv", "initial normalizer"]):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11, msg=lambda m: f"grad of {name}: {m}")


@pytest.mark.parametrize("shape", CAUSAL_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("normalize", [True, False], ids=["norm", "unnorm"])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_causal_matches_reference_float64(shape, feature_map, normalize, device):
    check_against_reference(shape, feature_map, True, normalize, device)


@pytest.mark.parametrize("shape", FULL_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("normalize", [True, False], ids=["norm", "unnorm"])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_non_causal_matches_reference_float64(shape, feature_map, normalize, device):
    check_against_reference(shape, feature_map, False, normalize, device)


@pytest.mark.parametrize("normalize", [True, False], ids=["norm", "unnorm"])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_initial_state_matches_reference(feature_map, normalize, device):
    check_against_reference((2, 2, 70, 70, 5, 6), feature_map, True, normalize, device, with_state=True)


def test_smaller_shared_memory_between_larger_launches(device):
    """On CUDA the float64 forward takes (49 D + 528) * 8 bytes of shared memory, past the 48 KiB that
    needs a kernel attribute from D = 114 on. The attribute is a maximum: D = 256, then 128, then 256
    again must all launch (an H200 run failed the third, 'invalid argument', when the attribute followed
    the last size instead of the largest)."""
    for dim in (256, 128, 256):
        check_against_reference((1, 1, 20, 20, dim, 4), "relu", True, True, device)


@pytest.mark.parametrize("options", [{"scale": 0.7}, {"eps": 0.5}, {"scale": 2.0, "eps": 1e-12}])
def test_explicit_scale_and_eps(options, device):
    check_against_reference((1, 2, 66, 66, 4, 3), "elu", True, True, device, **options)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("normalize", [True, False], ids=["norm", "unnorm"])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_gradcheck(feature_map, normalize, causal, device):
    q, k, v = random_qkv((1, 2, 6, 6, 3, 4), device=device)
    if normalize:
        q, k = positive_inputs(feature_map, q, k)
    inputs = [t.detach().requires_grad_() for t in (q, k, v)]
    if causal:
        gen = torch.Generator().manual_seed(3)
        inputs.append(torch.randn(1, 2, 3, 4, generator=gen, dtype=torch.float64).to(device).requires_grad_())
        inputs.append(torch.rand(1, 2, 3, generator=gen, dtype=torch.float64).to(device).requires_grad_())

    def fn(q, k, v, *state):
        out, final = actattn.linear_attention(
            q, k, v, feature_map=feature_map, causal=causal, normalize=normalize,
            initial_state=tuple(state) if state else None, return_state=True,
        )
        return out, final.kv, final.normalizer

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("normalize", [True, False], ids=["norm", "unnorm"])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_pieces_with_state_equal_one_call(feature_map, normalize, device):
    q, k, v = random_qkv((2, 2, 200, 200, 8, 5), device=device)
    if normalize:
        q, k = positive_inputs(feature_map, q, k)
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    options = dict(feature_map=feature_map, causal=True, normalize=normalize)
    whole, whole_state = actattn.linear_attention(q, k, v, return_state=True, **options)

    pieces, state = [], None
    for start, stop in [(0, 37), (37, 101), (101, 102), (102, 200)]:  # uneven, one of a single token
        piece, state = actattn.linear_attention(
            q[:, :, start:stop], k[:, :, start:stop], v[:, :, start:stop], initial_state=state,
            return_state=True, **options
        )
        pieces.append(piece)
    torch.testing.assert_close(torch.cat(pieces, dim=2), whole, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tuple(state), tuple(whole_state), rtol=1e-10, atol=1e-12)
    grad_out = random_like(whole)
    for got, want in zip(grads(torch.cat(pieces, dim=2), (q, k, v), grad_out), grads(whole, (q, k, v), grad_out)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("normalize", [True, False], ids=["norm", "unnorm"])
def test_chunked_composite_matches_reference(normalize, causal, device):
    q, k, v = random_qkv((2, 2, 150, 150, 8, 5), device=device)
    expected, _ = reference.linear_attention(q, k, v, "elu", causal, normalize)
    torch.testing.assert_close(reference.chunked_linear_attention(q, k, v, "elu", causal, normalize), expected)


def test_token_by_token_generation(device):
    q, k, v = random_qkv((1, 2, 12, 12, 4, 4), device=device)
    whole = actattn.linear_attention(q, k, v, causal=True)
    state, steps = None, []
    for t in range(12):
        step, state = actattn.linear_attention(
            q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], causal=True, initial_state=state,
            return_state=True,
        )
        steps.append(step)
    torch.testing.assert_close(torch.cat(steps, dim=2), whole)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("normalize", [True, False], ids=["norm", "unnorm"])
@pytest.mark.parametrize("feature_map", ["relu", "elu"])
def test_low_precision_error_at_most_twice_the_composite(feature_map, normalize, causal, dtype, device):
    """flash-attention's rule: |kernel - fp64 reference| <= 2 |torch composite in dtype - fp64 reference|.

    The composite is the matmul form people run in torch (reference.chunked_linear_attention, the
    benchmarks' baseline). The per-position cumsum reference is no yardstick here: its reductions over
    the head dim go through torch's tree-summing .sum(), which in float32 is ~2.5x more accurate
    than any matmul (torch's own included) on unnormalised outputs.
    """
    options = (feature_map, causal, normalize)
    assert_within_twice_composite(
        lambda q, k, v: actattn.linear_attention(
            q, k, v, feature_map=feature_map, causal=causal, normalize=normalize
        ),
        lambda q, k, v: reference.chunked_linear_attention(q, k, v, *options),
        random_qkv((2, 2, 150, 150, 64, 64), device=device),
        dtype,
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the tensor-core kernels are CUDA's")
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("head_dim", [128, 256])
def test_cuda_compact_tile_layouts_give_the_full_layouts_bits(head_dim, causal, monkeypatch):
    """The backward's compact layouts (sm_86/89) load two tiles later into shared memory (and at D = 256
    the key block's state in halves), the same products in the same order: in bfloat16, whose states are
    not rescaled, the same gradients, bit for bit."""
    shape = (2, 2, 150, 150, head_dim, head_dim)
    q, k, v = (t.cuda().bfloat16().requires_grad_() for t in random_qkv(shape))
    assert_compact_tiles_give_the_same_bits(
        lambda q, k, v: actattn.linear_attention(q, k, v, causal=causal), q, k, v, monkeypatch
    )


# Shapes that take the tensor-core kernels on a GPU (float16 / bfloat16, Dk = Dv in {32, 64, 96, 128, 256}
# or (Dk, Dv) = (64, 128), (128, 64): chunks of 64 positions, so 150 and 97 end inside a chunk; 64 or 32
# value columns per block, three blocks of 32 at D = 96; at D = 256 four blocks of 64, and the backward
# runs as four value groups summing dq and dk); elsewhere the generic kernels meet the same rule.
TENSOR_CORE_CASES = {
    "d256": ((1, 2, 150, 150, 256, 256), False),
    "d128": ((1, 2, 150, 150, 128, 128), False),
    "d64-bnhd": ((2, 3, 97, 97, 64, 64), True),
    "d96": ((1, 2, 150, 150, 96, 96), False),
    "d32-bnhd": ((2, 2, 97, 97, 32, 32), True),
    "dk64-dv128": ((1, 2, 150, 150, 64, 128), False),
    "dk128-dv64-bnhd": ((2, 1, 97, 97, 128, 64), True),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("feature_map", ["relu", "elu"])
@pytest.mark.parametrize("case", TENSOR_CORE_CASES)
def test_tensor_core_shapes_within_twice_composite(case, feature_map, causal, dtype, device):
    shape, interleaved = TENSOR_CORE_CASES[case]
    q, k, v = random_qkv(shape, device=device)
    if interleaved:  # the same values laid out (B, N, H, D), viewed as (B, H, N, D)
        q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    assert_within_twice_composite(
        lambda q, k, v: actattn.linear_attention(q, k, v, feature_map=feature_map, causal=causal),
        lambda q, k, v: reference.chunked_linear_attention(q, k, v, feature_map, causal),
        (q, k, v),
        dtype,
    )


def test_state_accumulates_in_float32_for_low_precision_inputs(device):
    q, k, v = (t.to(torch.bfloat16) for t in random_qkv((2, 2, 300, 300, 16, 16), device=device))
    _, state = actattn.linear_attention(q, k, v, causal=True, return_state=True)
    _, (kv, normalizer) = reference.linear_attention(q.double(), k.double(), v.double(), "elu", True)
    assert state.kv.dtype == torch.float32 and state.normalizer.dtype == torch.float32
    torch.testing.assert_close(state.kv, kv.float(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(state.normalizer, normalizer.float(), rtol=1e-5, atol=1e-4)


def test_non_contiguous_inputs(device):
    batch, heads, n, d = 2, 3, 70, 8
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(batch, n, heads, d, generator=gen, dtype=torch.float64).transpose(1, 2) for _ in range(2))
    v = torch.randn(batch, heads, d, n, generator=gen, dtype=torch.float64).transpose(-2, -1)
    q, k, v = (t.to(device).requires_grad_() for t in (q, k, v))
    for causal in (False, True):
        out = actattn.linear_attention(q, k, v, causal=causal)
        expected, _ = reference.linear_attention(q, k, v, "elu", causal)
        torch.testing.assert_close(out, expected)
        grad_out = random_like(out)
        for got, want in zip(grads(out, (q, k, v), grad_out), grads(expected, (q, k, v), grad_out)):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("shape", [(0, 2, 5, 5, 4, 4), (1, 2, 0, 0, 4, 4), (1, 0, 3, 3, 4, 2)])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_empty_inputs(shape, causal, device):
    q, k, v = random_qkv(shape, device=device, requires_grad=True)
    out, state = actattn.linear_attention(q, k, v, causal=causal, return_state=True)
    assert out.shape == (shape[0], shape[1], shape[2], shape[5])
    assert state.kv.shape == (shape[0], shape[1], shape[4], shape[5])
    assert torch.equal(state.kv, torch.zeros_like(state.kv))
    dq, dk, dv = grads(out.sum() + state.kv.sum(), (q, k, v), None)
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape


def test_empty_sequence_returns_a_copy_of_the_state(device):
    q, k, v = random_qkv((1, 2, 0, 0, 3, 4), device=device)
    state = actattn.LinearAttentionState(torch.ones(1, 2, 3, 4, dtype=torch.float64, device=device),
                                         torch.ones(1, 2, 3, dtype=torch.float64, device=device))
    _, final = actattn.linear_attention(q, k, v, causal=True, initial_state=state, return_state=True)
    assert torch.equal(final.kv, state.kv) and final.kv.data_ptr() != state.kv.data_ptr()


@pytest.mark.parametrize("dtype,dim", [(torch.float32, 32), (torch.bfloat16, 64)])  # generic, tensor cores
def test_backward_is_deterministic(dtype, dim, device):
    q, k, v = random_qkv((2, 4, 200, 200, dim, dim), dtype=dtype, device=device, requires_grad=True)
    runs = []
    for _ in range(2):
        out = actattn.linear_attention(q, k, v, causal=True)
        runs.append(grads(out, (q, k, v), random_like(out)))
    for first, second in zip(*runs):
        assert torch.equal(first, second)


# float64 at small head dims takes the generic kernels; bfloat16 at D = 64 the CUDA tensor-core kernel.
@pytest.mark.parametrize("dtype,dim", [(torch.float64, 8), (torch.bfloat16, 64)], ids=["f64", "bf16-d64"])
@pytest.mark.parametrize("normalize", [True, False], ids=["normalized", "unnormalized"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_backward_op_returns_only_the_masked_gradients(causal, normalize, dtype, dim, device):
    """Each gradient asked for alone is the same bits as with all three; the state's gradient too."""
    v_dim = 6 if dim == 8 else dim
    q, k, v = random_qkv((2, 2, 70, 70, dim, v_dim), dtype=dtype, device=device)
    state = (torch.rand(2, 2, dim, v_dim, dtype=torch.float32, device=device),
             torch.rand(2, 2, dim, dtype=torch.float32, device=device)) if causal else (None, None)
    if causal and dtype == torch.float64:
        state = tuple(t.double() for t in state)
    options = ("elu", causal, normalize, 1e-6, None, *state, None)
    out, final_state, final_normalizer, den = torch.ops.actattn._linear_attention_forward(q, k, v, *options)
    grad_out, grad_state = random_like(out), random_like(final_state)
    args = (grad_out, grad_state, None, q, k, v, out, den, *options)
    full = torch.ops.actattn._linear_attention_backward(*args, [True, True, True])
    for mask in ([True, False, False], [False, True, False], [False, False, True], [False, False, False]):
        got = torch.ops.actattn._linear_attention_backward(*args, mask)
        for wanted, g, f in zip(mask, got[:3], full[:3]):
            assert (g is not None) == wanted
            if wanted:
                assert torch.equal(g, f), "a gradient computed alone gives the same bits"
        for g, f in zip(got[3:], full[3:]):
            assert torch.equal(g, f), "the state's gradient does not depend on the mask"


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_float16_states_past_float16_range_stay_finite(causal, device):
    """N = 65536 keys of positive-mean values: the state's entries (~ N * 1.3 * 4 = 340000) are far past
    float16's 65504, where a kernel that rounds the state to float16 for a product gets inf, and
    dnum = dO / den (den ~ N) and the state's gradient (~ 1 / sqrt(N)) are far below its normal range
    (6e-5), where a kernel that rounds them to float16 loses bits in proportion to N (1 % here on an H200
    before they were scaled). Output and gradients must match the float64 result as closely as float16
    allows. On CUDA this is the tensor-core path."""
    n = 65536
    q, k, v = random_qkv((1, 1, n, n, 64, 64), dtype=torch.float64, device=device)
    v = v + 4.0
    want = reference.chunked_linear_attention(q, k, v, "elu", causal=causal)
    leaves = [t.half().requires_grad_() for t in (q, k, v)]
    out = actattn.linear_attention(*leaves, feature_map="elu", causal=causal)
    assert torch.isfinite(out).all()
    assert (out.double() - want).abs().max() <= 4e-3 * want.abs().max()  # float16 keeps 11 bits: 4.9e-4
    grad_out = random_like(out)
    out.backward(grad_out)
    for leaf in leaves:
        assert torch.isfinite(leaf.grad).all()
    leaves64 = [t.detach().requires_grad_() for t in (q, k, v)]
    reference.chunked_linear_attention(*leaves64, "elu", causal=causal).backward(grad_out.double())
    for name, leaf, leaf64 in zip("qkv", leaves, leaves64):
        error = (leaf.grad.double() - leaf64.grad).abs().max() / leaf64.grad.abs().max()
        assert error <= 4e-3, f"d{name}: {error:.1e}"  # the CPU kernel: 1.7e-3 (dq), 9e-4, 5e-4


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_dq_accurate_when_values_share_a_mean(causal, device):
    """Values ~ N(4, 1): every output is near 4 (non-causal: within ~1 / sqrt(N) of it), so
    dq_i = phi'(q_i) (S_i - z_i o_i^T) dnum_i subtracts two terms ~ z_i * 4 to leave one ~ sqrt(N). Taken
    from the bfloat16 output, o_i is off by up to half an ulp (0.008), which z_i (~ N) turns into errors
    larger than dq (57 % at N = 4096 on an H200, non-causal); the kernels take dnum_i . o_i from the
    float32 state instead (the CPU kernel: 0.8 %, causal 0.7 %; the torch composite: 230 %, causal 14 %).
    dk and dv keep the project's rule, at most twice the composite's error: the tensor-core key block
    takes dden from the saved output, as FlashAttention's delta is (an H200: dk 2.5 % causal, where the
    composite's is 7 %; the CPU kernel's 0.8 %)."""
    n = 2048
    q, k, v = random_qkv((1, 2, n, n, 64, 64), dtype=torch.float64, device=device)
    v = v + 4.0
    grad_out = random_like(v)
    leaves = [t.bfloat16().requires_grad_() for t in (q, k, v)]
    actattn.linear_attention(*leaves, feature_map="elu", causal=causal).backward(grad_out.bfloat16())
    composite = [t.bfloat16().requires_grad_() for t in (q, k, v)]
    reference.chunked_linear_attention(*composite, "elu", causal=causal).backward(grad_out.bfloat16())
    leaves64 = [t.detach().requires_grad_() for t in (q, k, v)]
    reference.chunked_linear_attention(*leaves64, "elu", causal=causal).backward(grad_out)

    def error(leaf, leaf64):
        return (leaf.grad.double() - leaf64.grad).abs().max() / leaf64.grad.abs().max()

    assert error(leaves[0], leaves64[0]) <= 2e-2, f"dq: {error(leaves[0], leaves64[0]):.1e}"
    for name, ours, theirs, leaf64 in zip("kv", leaves[1:], composite[1:], leaves64[1:]):
        assert error(ours, leaf64) <= 2 * error(theirs, leaf64), f"d{name}: {error(ours, leaf64):.1e}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_noncausal_backward_reads_the_saved_state_and_gives_the_same_bits(dtype, device):
    """Autograd hands a non-causal backward the forward's final state (its state over all keys) instead
    of letting it rebuild the state from the keys: the same chunks in the same order, so the same bits,
    grouped heads and padded keys included. The kernels must really read it: a doctored state changes
    dq (on CUDA these shapes take the generic kernels; the tensor-core backward's reading is checked by
    tests/emulation/linear_kernels.cpp)."""
    q, k, v = grouped_random_qkv((2, 4, 70, 70, 16, 12), kv_heads=2, device=device)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    options = ("elu", False, True, 1e-6, None, None, None, torch.tensor([70, 41], device=device))
    out, final_state, final_normalizer, den = torch.ops.actattn._linear_attention_forward(q, k, v, *options)
    args = (random_like(out), None, None, q, k, v, out, den, *options, [True, True, True])
    rebuilt = torch.ops.actattn._linear_attention_backward(*args)
    read = torch.ops.actattn._linear_attention_backward(*args, final_state, final_normalizer)
    for got, want in zip(read, rebuilt):
        assert torch.equal(got, want)
    qa, ka, va = (t.detach().requires_grad_() for t in (q, k, v))
    out_autograd = actattn.linear_attention(qa, ka, va, causal=False, key_lengths=options[-1])
    assert torch.equal(out_autograd, out)
    for got, want in zip(torch.autograd.grad(out_autograd, (qa, ka, va), args[0]), rebuilt):
        assert torch.equal(got, want)
    doctored = torch.ops.actattn._linear_attention_backward(*args, 2 * final_state, final_normalizer)
    assert not torch.equal(doctored[0], rebuilt[0])


def test_saved_state_is_refused_where_it_has_no_meaning():
    q, k, v = random_qkv((1, 2, 9, 9, 4, 3))
    for causal in (False, True):
        options = ("elu", causal, True, 1e-6, None, None, None, None)
        out, kv, z, den = torch.ops.actattn._linear_attention_forward(q, k, v, *options)
        args = (torch.ones_like(out), None, None, q, k, v, out, den, *options, [True, True, True])
        if causal:
            with pytest.raises(ValueError, match="a causal backward rebuilds its state chunk by chunk"):
                torch.ops.actattn._linear_attention_backward(*args, kv, z)
        else:
            with pytest.raises(ValueError, match="saved_state and saved_normalizer must be given together"):
                torch.ops.actattn._linear_attention_backward(*args, kv, None)
            with pytest.raises(TypeError, match="saved_state must have dtype"):
                torch.ops.actattn._linear_attention_backward(*args, kv.float(), z)


def test_autograd_asks_only_for_what_requires_grad():
    q, k, v = random_qkv((1, 2, 33, 33, 8, 8))
    v.requires_grad_()
    out = actattn.linear_attention(q, k, v, causal=True)
    (dv,) = torch.autograd.grad(out.sum(), v)
    v_ref = v.detach().requires_grad_()
    (want,) = torch.autograd.grad(reference.linear_attention(q, k, v_ref, "elu", True)[0].sum(), v_ref)
    torch.testing.assert_close(dv, want)
