"""Every registered op, public or underscored, validates every tensor it reads: a wrong dtype, batch,
row count, rank or device in any argument raises an actattn error naming the problem, never a crash
(the backward ops once read past the end of a float32 log-sum-exp given with float64 inputs).

Table-driven: one valid call per op, then each tensor argument replaced by a broken version of itself.
"""

import pytest
import torch

import actattn  # noqa: F401  (registers torch.ops.actattn)

B, H, N, D = 2, 2, 5, 4


def tensors(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, N, D, generator=gen, dtype=torch.float64) for _ in range(3)]


def valid_calls():
    """op name -> (argument list, names of its tensor arguments by position)."""
    ops = torch.ops.actattn
    q, k, v = tensors()
    lengths, seed = torch.tensor([N, N - 2]), torch.tensor([7])
    # activation, causal, scale, bias, divisor, causal_alignment, dropout_p, window_left, window_right:
    # every scalar option, in schema order; then the optional tensors key_lengths and dropout_seed.
    options = ["softmax", False, None, None, None, "top_left", 0.2, 2, 1]
    out, lse = ops._attention_forward(q, k, v, *options, lengths, seed)
    grad = torch.randn_like(out)
    state, normalizer = torch.rand(B, H, D, D, dtype=torch.float64), torch.rand(B, H, D, dtype=torch.float64)
    lin_args = ["elu", True, True, 1e-6, None, state, normalizer, lengths]
    lin_out, _, _, den = ops._linear_attention_forward(q, k, v, *lin_args)
    grad_state, grad_normalizer = torch.randn_like(state), torch.randn_like(normalizer)
    attention_names = {0: "q", 1: "k", 2: "v", 3 + len(options): "key_lengths", 4 + len(options): "dropout_seed"}
    linear_names = {0: "q", 1: "k", 2: "v", 8: "initial_state", 9: "initial_normalizer", 10: "key_lengths"}
    return {
        "attention": ([q, k, v, *options, lengths, seed], attention_names),
        "attention_with_lse": ([q, k, v, *options, lengths, seed], attention_names),
        "_attention_forward": ([q, k, v, *options, lengths, seed], attention_names),
        "_attention_backward": (
            [grad, q, k, v, out, lse, *options, lengths, seed, [True, True, True]],
            {0: "grad_out", 1: "q", 2: "k", 3: "v", 4: "out", 5: "log_sum_exp", 6 + len(options): "key_lengths",
             7 + len(options): "dropout_seed"},
        ),
        "linear_attention": ([q, k, v, *lin_args], linear_names),
        "_linear_attention_forward": ([q, k, v, *lin_args], linear_names),
        "_linear_attention_backward": (
            [grad, grad_state, grad_normalizer, q, k, v, lin_out, den, *lin_args, [True, True, True]],
            {0: "grad_out", 1: "grad_final_state", 2: "grad_final_normalizer", 3: "q", 4: "k", 5: "v", 6: "out",
             7: "denominator", 13: "initial_state", 14: "initial_normalizer", 15: "key_lengths"},
        ),
    }


def wrong_dtype(t):
    return t.float() if t.is_floating_point() else t.double()


MUTATIONS = {
    "dtype": wrong_dtype,
    "float8": lambda t: t.to(torch.float8_e4m3fn),
    "batch": lambda t: t[:1],
    "rows": lambda t: t.narrow(2, 0, t.shape[2] - 1),
    "rank": lambda t: t.unsqueeze(0),
    "device": lambda t: t.to("meta"),
}

# Combinations that are valid calls, not errors: attention takes any number of queries, and the first
# element of the (1,) seed is the seed.
VALID = {("attention", "q", "rows"), ("attention_with_lse", "q", "rows"), ("_attention_forward", "q", "rows")} | {
    (op, "dropout_seed", "batch") for op in ("attention", "attention_with_lse", "_attention_forward", "_attention_backward")
}


def cases():
    for op, (args, names) in valid_calls().items():
        for position, name in names.items():
            for mutation, fn in MUTATIONS.items():
                if mutation == "rows" and args[position].dim() < 3:
                    continue
                if (op, name, mutation) not in VALID:
                    yield pytest.param(op, position, mutation, id=f"{op}-{name}-{mutation}")


def test_the_valid_calls_run():
    for op, (args, _) in valid_calls().items():
        getattr(torch.ops.actattn, op)(*args)


@pytest.mark.parametrize("op,position,mutation", list(cases()))
def test_a_wrong_argument_raises_an_actattn_error(op, position, mutation):
    args, names = valid_calls()[op]
    args = list(args)
    args[position] = MUTATIONS[mutation](args[position])
    with pytest.raises((TypeError, ValueError, RuntimeError)) as error:
        getattr(torch.ops.actattn, op)(*args)
    # Our own check, not an error from deep inside torch: the message names the op and the argument.
    message = str(error.value)
    assert "actattn" in message, message
    assert any(name in message for name in names.values()), message
