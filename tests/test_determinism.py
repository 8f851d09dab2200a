"""Bit-identical results across runs, thread counts and concurrent Python threads.

Each (batch, head) is owned by one thread in every CPU kernel and no atomics are used, so neither the
number of OpenMP threads nor other Python threads calling the same op change a single bit.
"""

import threading

import pytest
import torch

import actattn
from conftest import random_like, random_qkv

SHAPE = (2, 3, 150, 150, 16, 16)


def forward_backward(op, q, k, v, grad_out_seed=1):
    inputs = [t.detach().requires_grad_() for t in (q, k, v)]
    out = op(*inputs)
    grads = torch.autograd.grad(out, inputs, random_like(out, seed=grad_out_seed))
    return [out.detach(), *grads]


OPS = {
    "softmax": lambda q, k, v: actattn.attention(q, k, v, causal=True),
    "relu": lambda q, k, v: actattn.attention(q, k, v, activation="relu"),
    "linear-elu causal": lambda q, k, v: actattn.linear_attention(q, k, v, causal=True),
    "linear-relu": lambda q, k, v: actattn.linear_attention(q, k, v, feature_map="relu"),
}


def assert_bitwise_equal(a, b):
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.parametrize("name", OPS)
def test_thread_counts_do_not_change_a_bit(name):
    q, k, v = random_qkv(SHAPE, dtype=torch.float32)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(forward_backward(OPS[name], q, k, v))
    finally:
        torch.set_num_threads(before)
    assert_bitwise_equal(results[0], results[1])
    assert_bitwise_equal(results[0], results[2])


@pytest.mark.parametrize("name", OPS)
def test_concurrent_python_threads_get_the_single_thread_result(name):
    q, k, v = random_qkv(SHAPE, dtype=torch.float32)
    expected = forward_backward(OPS[name], q, k, v)
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = forward_backward(OPS[name], q, k, v)
        except Exception as error:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for result in results:
        assert_bitwise_equal(result, expected)


# One head: on one thread the CPU backward takes its one-pass schedule (each key tile's scores computed
# once, dQ gathered per head), on two threads the two-pass one (a key pass and a query pass, to split the
# head). Both must give the same bits; the causal cases start key tiles at rows that are not a whole
# register block (bottom-right alignment with 150 - 37 keys of offset).
BACKWARD_SCHEDULE_CASES = {
    "softmax causal": (dict(causal=True), 150, 150),
    "softmax causal bottom-right": (dict(causal=True, causal_alignment="bottom_right"), 37, 150),
    "sigmoid causal top-left, Nq > Nk": (dict(activation="sigmoid", causal=True), 150, 97),
    "relu": (dict(activation="relu"), 130, 77),
    "softmax causal bottom-right, padded keys": (
        dict(causal=True, causal_alignment="bottom_right", key_lengths=torch.tensor([121])), 43, 150),
}


@pytest.mark.parametrize("name", BACKWARD_SCHEDULE_CASES)
def test_one_pass_and_two_pass_backward_give_the_same_bits(name):
    options, q_len, k_len = BACKWARD_SCHEDULE_CASES[name]
    q, k, v = random_qkv((1, 1, q_len, k_len, 24, 20), dtype=torch.float32)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(forward_backward(lambda q, k, v: actattn.attention(q, k, v, **options), q, k, v))
    finally:
        torch.set_num_threads(before)
    assert_bitwise_equal(results[0], results[1])
