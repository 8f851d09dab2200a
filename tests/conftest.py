import pytest
import torch

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


def random_like(t, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(device=t.device, dtype=t.dtype)


def grads(outputs, inputs, grad_outputs):
    """d(sum_i <outputs_i, grad_outputs_i>)/d(inputs), with None for unused inputs."""
    return torch.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True)


def max_error(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
