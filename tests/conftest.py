import os
import tempfile

import pytest
import torch

# torch.compile's on-disk caches key compiled graphs by their traced graph, not by the custom ops'
# schemas: a cache left by another build of actattn can call an op with an old argument list. Each
# test session compiles into its own directory.
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="actattn-inductor-")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def random_qkv(shape, dtype=torch.float64, device="cpu", seed=0, requires_grad=False):
    """q, k, v for shape (B, H, Nq, Nk, Dk, Dv), standard normal, reproducible."""
    batch, heads, q_len, k_len, qk_dim, v_dim = shape
    gen = torch.Generator().manual_seed(seed)
    tensors = [
        torch.randn(batch, heads, q_len, qk_dim, generator=gen, dtype=torch.float64),
        torch.randn(batch, heads, k_len, qk_dim, generator=gen, dtype=torch.float64),
        torch.randn(batch, heads, k_len, v_dim, generator=gen, dtype=torch.float64),
    ]
    return [t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in tensors]


def grouped_random_qkv(shape, kv_heads, device="cpu"):
    """random_qkv's q, k, v requiring grad, k and v with kv_heads heads (grouped-query attention when fewer
    than the query heads)."""
    batch, heads, q_len, k_len, qk_dim, v_dim = shape
    q, _, _ = random_qkv(shape, device=device, requires_grad=True)
    _, k, v = random_qkv((batch, kv_heads, q_len, k_len, qk_dim, v_dim), device=device, seed=1, requires_grad=True)
    return q, k, v


def assert_attention_op_matches_reference(q, k, v, options):
    """torch.ops.actattn.attention against reference.attention given the same options, in float64:
    the output and the gradients of q, k, v."""
    from actattn import reference

    out = torch.ops.actattn.attention(q, k, v, **options)
    want = reference.attention(q, k, v, **options)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    grad_out = random_like(out)
    for got, expected in zip(grads(out, (q, k, v), grad_out), grads(want, (q, k, v), grad_out)):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-12)


def random_like(t, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(device=t.device, dtype=t.dtype)


def grads(outputs, inputs, grad_outputs):
    """d(sum_i <outputs_i, grad_outputs_i>)/d(inputs), with None for unused inputs."""
    return torch.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True)


def assert_compact_tiles_give_the_same_bits(op, q, k, v, monkeypatch):
    """The backward's compact tiles (those of GPUs granting a block 99 KiB, sm_86/89; forced by
    ACTATTN_COMPACT_TILES=1 on a GPU with room for the full ones) form the same products in the same
    order as the full tiles: op(q, k, v)'s gradients must not change by a bit."""

    def gradients():
        out = op(q, k, v)
        return torch.autograd.grad(out, (q, k, v), random_like(out))

    full = gradients()
    monkeypatch.setenv("ACTATTN_COMPACT_TILES", "1")
    compact = gradients()
    for name, a, b in zip("qkv", full, compact):
        assert torch.equal(a, b), f"d{name} differs between the full and the compact tiles"


def max_error(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def assert_within_twice_composite(kernel, composite, inputs, dtype, slack=1e-6):
    """flash-attention's rule for low precision, forward and gradients of q, k, v:
    |kernel(x) - truth| <= 2 |composite(x) - truth| (+ slack), where x are the inputs rounded to dtype,
    composite is the torch composite run in dtype and truth the same composite in float64 on the same
    rounded inputs."""
    low = [t.detach().to(dtype).requires_grad_() for t in inputs]
    exact = [t.detach().double().requires_grad_() for t in low]
    out, comp, truth = kernel(*low), composite(*low), composite(*exact)
    assert out.dtype == dtype
    assert max_error(out, truth) <= 2 * max_error(comp, truth) + slack, "output"
    grad_out = random_like(truth)
    got = grads(out, low, grad_out.to(dtype))
    comp_grads = grads(comp, low, grad_out.to(dtype))
    want = grads(truth, exact, grad_out)
    for g, c, w, name in zip(got, comp_grads, want, "qkv"):
        assert g.dtype == dtype
        assert max_error(g, w) <= 2 * max_error(c, w) + slack, f"grad_{name}"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes-long checks, run with ACTATTN_SLOW_TESTS=1")


def pytest_collection_modifyitems(config, items):
    import os

    if os.environ.get("ACTATTN_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set ACTATTN_SLOW_TESTS=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
