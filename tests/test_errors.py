"""Bad input raises an error that names the argument, what was expected and what was given."""

import contextlib
import warnings

import pytest
import torch

import actattn
from conftest import random_qkv


def qkv(shape=(2, 2, 5, 5, 4, 4), **kwargs):
    return random_qkv(shape, dtype=torch.float32, **kwargs)


ATTENTION_CASES = [
    ("wrong rank", lambda q, k, v: actattn.attention(q[0], k, v), ValueError, r"q must have 4 dimensions.*got 3"),
    ("batch", lambda q, k, v: actattn.attention(q, k[:1], v[:1]), ValueError, r"k must have the same batch size"),
    ("heads", lambda q, k, v: actattn.attention(q, k, v[:, :1]), ValueError, r"v must have the same number of heads"),
    ("k/v length", lambda q, k, v: actattn.attention(q, k, v[:, :, :3]), ValueError, r"v must have the same sequence length \(dim 2\) as k \(5\); got 3"),
    ("q/k dim", lambda q, k, v: actattn.attention(q, k[..., :3], v), ValueError, r"k must have the same head dim.*as q \(4\); got 3"),
    ("integer", lambda q, k, v: actattn.attention(q.long(), k.long(), v.long()), TypeError, r"q must be a floating-point tensor.*Long"),
    ("mixed dtypes", lambda q, k, v: actattn.attention(q, k.double(), v), TypeError, r"same dtype.*q Float, k Double"),
    ("activation", lambda q, k, v: actattn.attention(q, k, v, activation="tanh"), ValueError, r"activation must be one of 'softmax', 'sigmoid', 'relu'; got 'tanh'"),
    ("softmax bias", lambda q, k, v: actattn.attention(q, k, v, bias=1.0), ValueError, r"bias must be None with activation='softmax'"),
    ("divisor", lambda q, k, v: actattn.attention(q, k, v, activation="relu", divisor=0.0), ValueError, r"divisor must be positive, got 0"),
    ("bias with grad", lambda q, k, v: actattn.attention(q, k, v, activation="sigmoid", bias=torch.tensor(0.5, requires_grad=True)), TypeError, r"bias is a constant of the op"),
    ("float8", lambda q, k, v: actattn.attention(q, k.to(torch.float8_e5m2), v), TypeError, r"k must be a floating-point tensor.*got Float8_e5m2"),
    ("nan scale", lambda q, k, v: actattn.attention(q, k, v, scale=float("nan")), ValueError, r"scale must be finite"),
]

LINEAR_CASES = [
    ("feature map", lambda q, k, v: actattn.linear_attention(q, k, v, feature_map="softplus"), ValueError, r"feature_map must be one of 'identity', 'relu', 'elu'; got 'softplus'"),
    ("causal lengths", lambda q, k, v: actattn.linear_attention(q, k[:, :, :3], v[:, :, :3], causal=True), ValueError, r"needs as many queries as keys; got q_len 5 and k_len 3"),
    ("eps", lambda q, k, v: actattn.linear_attention(q, k, v, eps=-1.0), ValueError, r"eps must be finite and > 0, got -1"),
    ("eps zero", lambda q, k, v: actattn.linear_attention(q, k, v, eps=0.0), ValueError, r"eps must be finite and > 0, got 0"),
    ("half a state", lambda q, k, v: actattn.linear_attention(q, k, v, causal=True, initial_state=(torch.zeros(2, 2, 4, 4), None)), ValueError, r"initial_state and initial_normalizer must be given together.*got only initial_state"),
    ("scale with grad", lambda q, k, v: actattn.linear_attention(q, k, v, scale=torch.tensor(0.5, requires_grad=True)), TypeError, r"scale is a constant of the op and gets no gradient"),
    ("float8", lambda q, k, v: actattn.linear_attention(*(t.to(torch.float8_e4m3fn) for t in (q, k, v))), TypeError, r"q must be a floating-point tensor \(float64, float32, bfloat16 or float16\), got Float8_e4m3fn"),
    ("state without causal", lambda q, k, v: actattn.linear_attention(q, k, v, initial_state=(torch.zeros(2, 2, 4, 4), torch.zeros(2, 2, 4))), ValueError, r"initial_state is only defined for causal=True"),
    ("state shape", lambda q, k, v: actattn.linear_attention(q, k, v, causal=True, initial_state=(torch.zeros(2, 2, 4, 3), torch.zeros(2, 2, 4))), ValueError, r"initial_state must have shape \(batch, kv_heads, qk_dim, v_dim\) = \[2, 2, 4, 4\], got \[2, 2, 4, 3\]"),
    ("normalizer shape", lambda q, k, v: actattn.linear_attention(q, k, v, causal=True, initial_state=(torch.zeros(2, 2, 4, 4), torch.zeros(2, 4))), ValueError, r"initial_normalizer must have shape \(batch, kv_heads, qk_dim\) = \[2, 2, 4\], got \[2, 4\]"),
    ("state dtype", lambda q, k, v: actattn.linear_attention(q, k, v, causal=True, initial_state=(torch.zeros(2, 2, 4, 4, dtype=torch.float64), torch.zeros(2, 2, 4))), TypeError, r"initial_state must have dtype Float .*got Double"),
    ("state type", lambda q, k, v: actattn.linear_attention(q, k, v, causal=True, initial_state=torch.zeros(2, 2, 4, 4)), TypeError, r"initial_state must be a LinearAttentionState"),
    ("wrong rank", lambda q, k, v: actattn.linear_attention(q, k, v.flatten(0, 1)), ValueError, r"v must have 4 dimensions"),
]


@pytest.mark.parametrize("name,call,error,message", ATTENTION_CASES + LINEAR_CASES, ids=lambda x: x if isinstance(x, str) else "")
def test_bad_input_raises(name, call, error, message):
    q, k, v = qkv()
    with pytest.raises(error, match=message):
        call(q, k, v)


@pytest.mark.parametrize("dim", [257, 300])
def test_head_dim_over_the_maximum(dim):
    q, k, v = qkv((1, 1, 2, 2, dim, 4))
    with pytest.raises(ValueError, match=rf"head dim of q and k must be between 1 and 256, got {dim}"):
        actattn.attention(q, k, v)
    q, k, v = qkv((1, 1, 2, 2, 4, dim))
    with pytest.raises(ValueError, match=rf"head dim of v must be between 1 and 256, got {dim}"):
        actattn.linear_attention(q, k, v)


def test_zero_head_dim():
    q, k, v = qkv((1, 1, 2, 2, 0, 4))
    with pytest.raises(ValueError, match=r"between 1 and 256, got 0"):
        actattn.attention(q, k, v)


def test_errors_also_come_from_the_ops_directly():
    # The C++ checks, not only the Python wrappers, reject bad names (LibTorch users call the ops directly).
    q, k, v = qkv()
    with pytest.raises(ValueError, match="activation must be one of"):
        torch.ops.actattn.attention(q, k, v, "tanh")
    with pytest.raises(ValueError, match="feature_map must be one of"):
        torch.ops.actattn.linear_attention(q, k, v, "softplus")


def test_errors_under_fake_tensors():
    # torch.compile traces with fake tensors: the meta kernels must reject the same inputs.
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q, k, v = (torch.empty(2, 2, 5, 4) for _ in range(3))
        with pytest.raises(ValueError, match=r"v must have the same sequence length \(dim 2\) as k"):
            torch.ops.actattn.attention(q, k, v[:, :, :3])
        with pytest.raises(ValueError, match=r"needs as many queries as keys"):
            torch.ops.actattn.linear_attention(q, k[:, :, :3], v[:, :, :3], "elu", True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_mixed_cuda_and_cpu_devices():
    q, k, v = qkv()
    with pytest.raises(RuntimeError, match=r"same device"):
        actattn.attention(q.cuda(), k, v)


@pytest.fixture
def warn_always():
    """The generic kernels' warning comes once per op and process; warn_always makes every call say it,
    whatever ran before."""
    previous = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    yield
    torch.set_warn_always(previous)


@contextlib.contextmanager
def no_actattn_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="actattn")
        yield


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the tensor-core kernels are CUDA's")
@pytest.mark.parametrize("op", [actattn.attention, actattn.linear_attention], ids=["attention", "linear"])
def test_cuda_half_precision_off_the_tensor_cores_warns_naming_why(op, warn_always):
    """bfloat16 at a head dim without a tensor-core kernel (80; both op families have 32, 64, 96, 128 and
    256) runs the generic kernels and says why; D = 64 is silent."""
    def bf16(dim):
        return [t.cuda().bfloat16().requires_grad_() for t in random_qkv((1, 2, 70, 70, dim, dim))]

    with pytest.warns(UserWarning, match=r"generic CUDA kernels .* head dim is not 32, 64, 96, 128 or 256"):
        op(*bf16(80)).sum().backward()
    with no_actattn_warning():
        op(*bf16(64)).sum().backward()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the tensor-core kernels are CUDA's")
def test_cuda_linear_attention_at_head_dim_256_takes_the_tensor_cores_on_every_sm80_gpu(warn_always):
    """Linear attention at D = 256 takes the tensor cores on every sm_80+ GPU, forward (77 KiB of shared
    memory) and backward (its value groups: 123 KiB, or the compact layouts' 96 KiB where the GPU grants
    less, sm_86/89's 99 KiB): no warning."""
    q, k, v = [t.cuda().bfloat16().requires_grad_() for t in random_qkv((1, 2, 70, 70, 256, 256))]
    if torch.cuda.get_device_capability(q.device) < (8, 0):
        pytest.skip("the tensor-core kernels need sm_80")
    with no_actattn_warning():
        actattn.linear_attention(q, k, v, causal=True).sum().backward()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the tensor-core kernels are CUDA's")
def test_cuda_attention_with_dk_not_dv_warns_but_at_the_tiled_pair(warn_always):
    """Quadratic attention's one tiled pair of head dims with Dk != Dv, (192, 128), is silent; another
    pair runs the generic kernels and says why."""
    def bf16(qk_dim, v_dim):
        return [t.cuda().bfloat16().requires_grad_() for t in random_qkv((1, 2, 70, 70, qk_dim, v_dim))]

    with pytest.warns(UserWarning, match=r"generic CUDA kernels .* different head dims other than \(192, 128\)"):
        actattn.attention(*bf16(64, 128)).sum().backward()
    with no_actattn_warning():
        actattn.attention(*bf16(192, 128)).sum().backward()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the tensor-core kernels are CUDA's")
def test_cuda_attention_at_head_dim_256_takes_the_tensor_cores_on_every_sm80_gpu(warn_always):
    """D = 256's tensor-core backward needs 99 KiB of shared memory per block (its dK/dV kernel's compact
    tiles where the GPU grants less than the full tiles' 154 KiB: sm_86 / 89), which every sm_80+ GPU
    grants: forward and backward run without a warning."""
    q, k, v = [t.cuda().bfloat16().requires_grad_() for t in random_qkv((1, 2, 70, 70, 256, 256))]
    if torch.cuda.get_device_capability(q.device) < (8, 0):
        pytest.skip("the tensor-core kernels need sm_80")
    with no_actattn_warning():
        actattn.attention(q, k, v).sum().backward()
