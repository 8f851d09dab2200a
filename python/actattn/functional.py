"""actattn's public functions, shaped like ``torch.nn.functional.scaled_dot_product_attention``.

Every tensor is laid out ``(batch, heads, seq_len, head_dim)``. Keys and values may have another
length than queries, and values another head dim than queries and keys. Any strides work.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from ._ops import ops

SCORE_ACTIVATIONS = ("softmax", "sigmoid", "relu")
FEATURE_MAPS = ("identity", "relu", "elu")


class LinearAttentionState(NamedTuple):
    """The recurrent state of causal linear attention after some prefix of keys.

    ``kv`` is ``sum_j phi(k_j) v_j^T`` with shape ``(batch, heads, qk_dim, v_dim)`` and ``normalizer``
    is ``sum_j phi(k_j)`` with shape ``(batch, heads, qk_dim)``; both are float32 (float64 for float64
    inputs) whatever the input dtype, so long sequences accumulate without loss.
    """

    kv: Tensor
    normalizer: Tensor


def _check_choice(name: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"actattn: {name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def _check_numbers(**options) -> None:
    """Scalar options are constants of the op: a tensor that requires grad would silently lose its gradient."""
    for name, value in options.items():
        if isinstance(value, Tensor) and value.requires_grad:
            raise TypeError(
                f"actattn: {name} is a constant of the op and gets no gradient; got a tensor that requires grad. "
                f"Pass a Python float ({name}.item()), or {name}.detach() if no gradient is wanted"
            )


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    activation: str = "softmax",
    causal: bool = False,
    scale: Optional[float] = None,
    bias: Optional[float] = None,
    divisor: Optional[float] = None,
    key_lengths: Optional[Tensor] = None,
) -> Tensor:
    """Quadratic attention ``O = act(scale * Q K^T + bias) / divisor @ V``, never materialising N x N.

    Args:
        q: ``(B, H, Nq, Dk)``. k: ``(B, H, Nk, Dk)``. v: ``(B, H, Nk, Dv)``. Dk, Dv in 1..256.
        activation: the score activation.
            ``"softmax"``: row-wise softmax (Vaswani et al. 2017), computed flash-style; only the row
            log-sum-exp is kept for backward. ``bias`` and ``divisor`` must be None.
            ``"sigmoid"``: ``sigmoid(s + bias) / divisor`` with ``bias = -log(Nk)`` and ``divisor = 1``
            by default (Ramapuram et al. 2024).
            ``"relu"``: ``relu(s + bias) / divisor`` with ``bias = 0`` and ``divisor = Nk`` by default
            (Wortsman et al. 2023).
        causal: query ``i`` sees keys ``j <= i``. With ``Nq != Nk`` the mask is aligned at the top-left,
            as ``F.scaled_dot_product_attention(is_causal=True)`` does.
        scale: multiplies ``Q K^T``; default ``1 / sqrt(Dk)``.
        key_lengths: optional ``(B,)`` integer tensor: sequence ``b`` has keys ``0 .. key_lengths[b] - 1``;
            the others are padding and take no part (values are clamped to ``[0, Nk]``). The
            length-dependent defaults (sigmoid's bias, relu's divisor) then use each sequence's length.

    Returns:
        ``(B, H, Nq, Dv)`` in the dtype of q. A query that sees no key (only when ``Nk == 0``) gets zeros.
    """
    _check_choice("activation", activation, SCORE_ACTIVATIONS)
    _check_numbers(scale=scale, bias=bias, divisor=divisor)
    return ops.attention(q, k, v, activation, causal, scale, bias, divisor, key_lengths)


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    feature_map: str = "elu",
    causal: bool = False,
    normalize: bool = True,
    eps: float = 1e-6,
    scale: Optional[float] = None,
    initial_state: Optional[Union[LinearAttentionState, Tuple[Tensor, Tensor]]] = None,
    return_state: bool = False,
    key_lengths: Optional[Tensor] = None,
) -> Union[Tensor, Tuple[Tensor, LinearAttentionState]]:
    """Linear attention ``phi(Q) (phi(K)^T V)`` in O(N) time and memory, phi fused into the kernel.

    With ``a_i = scale * phi(q_i)``, ``S_i = S_0 + sum_{j visible to i} phi(k_j) v_j^T`` and
    ``z_i = z_0 + sum_{j visible to i} phi(k_j)``, the output is ``o_i = a_i^T S_i / (a_i . z_i + eps)``
    when ``normalize`` (Katharopoulos et al. 2020) and ``a_i^T S_i`` otherwise.

    Args:
        q: ``(B, H, Nq, Dk)``. k: ``(B, H, Nk, Dk)``. v: ``(B, H, Nk, Dv)``. Dk, Dv in 1..256.
        feature_map: ``"elu"`` (``elu(x) + 1``, positive, the default), ``"relu"``, or ``"identity"``
            (no positivity: the denominator can cross zero, so prefer ``normalize=False`` with it).
        causal: position ``i`` sees keys ``j <= i`` (needs ``Nq == Nk``), computed chunk by chunk in
            O(N D^2) time with no per-position state. Non-causal: every query sees every key.
        normalize: divide by ``a_i . z_i + eps`` (default True).
        eps: added to the denominator (default 1e-6); must be > 0, since ``a_i . z_i`` can be 0 (a relu
            map that zeroes a query).
        scale: multiplies ``phi(q)``; default ``1 / sqrt(Dk)``. With ``normalize`` it cancels except
            against ``eps``.
        initial_state: causal only: the state after earlier keys, as returned by a previous call with
            ``return_state=True``. Differentiable. Default: zeros.
        return_state: also return the :class:`LinearAttentionState` after this call's keys, to feed
            the next call (process a long sequence in pieces, or generate token by token).
        key_lengths: optional ``(B,)`` integer tensor: keys of sequence ``b`` from ``key_lengths[b]`` on
            are padding and enter no state (clamped to ``[0, Nk]``); their gradients are zero.

    Returns:
        ``out`` of shape ``(B, H, Nq, Dv)``, or ``(out, state)`` when ``return_state``.
    """
    _check_choice("feature_map", feature_map, FEATURE_MAPS)
    _check_numbers(eps=eps, scale=scale)
    state_kv, state_normalizer = None, None
    if initial_state is not None:
        if not (isinstance(initial_state, tuple) and len(initial_state) == 2):
            raise TypeError(
                "actattn: initial_state must be a LinearAttentionState (kv, normalizer) as returned with "
                f"return_state=True; got {type(initial_state).__name__}"
            )
        state_kv, state_normalizer = initial_state
    out, kv, normalizer = ops.linear_attention(
        q, k, v, feature_map, causal, normalize, eps, scale, state_kv, state_normalizer, key_lengths
    )
    if return_state:
        return out, LinearAttentionState(kv, normalizer)
    return out
