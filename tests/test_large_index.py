"""64-bit indexing: an output of more than 2**31 elements is written where it belongs.

q is one sequence expanded over 32,769 batches (stride 0, no memory), so the output (8.6 GB in float32)
is the only large tensor; every batch must equal the first. With 32-bit offsets the last batches would
be written over the first ones or outside the allocation.
"""

import pytest
import torch

import actattn


@pytest.mark.slow
@pytest.mark.parametrize("op", ["attention", "linear_attention"])
def test_output_past_two_to_the_31_elements(op):
    q_len, dim = 1024, 64
    batch = 2**31 // (q_len * dim) + 1
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, q_len, dim, generator=gen).expand(batch, 1, q_len, dim)
    k, v = (torch.randn(1, 1, 4, dim, generator=gen).expand(batch, 1, 4, dim) for _ in range(2))
    out = getattr(actattn, op)(q, k, v)
    assert out.numel() > 2**31
    first = out[0]
    for b in (1, batch // 2, batch - 2, batch - 1):
        assert torch.equal(out[b], first), f"batch {b}"
