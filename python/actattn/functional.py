"""actattn's public functions, shaped like ``torch.nn.functional.scaled_dot_product_attention``.

Every tensor is laid out ``(batch, heads, seq_len, head_dim)``. Keys and values may have another
length than queries, and values another head dim than queries and keys. Any strides work.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor
from torch.nn.attention.bias import CausalBias, CausalVariant

from ._ops import CAUSAL_ALIGNMENTS, FEATURE_MAPS, SCORE_ACTIVATIONS, ops

__all__ = [
    "CAUSAL_ALIGNMENTS",
    "FEATURE_MAPS",
    "SCORE_ACTIVATIONS",
    "LinearAttentionState",
    "attention",
    "linear_attention",
    "scaled_dot_product_attention",
]


class LinearAttentionState(NamedTuple):
    """The recurrent state of causal linear attention after some prefix of keys.

    ``kv`` is ``sum_j phi(k_j) v_j^T`` with shape ``(batch, kv_heads, qk_dim, v_dim)`` and ``normalizer``
    is ``sum_j phi(k_j)`` with shape ``(batch, kv_heads, qk_dim)`` (one per key/value head); both are float32 (float64 for float64
    inputs) whatever the input dtype, so long sequences accumulate without loss.
    """

    kv: Tensor
    normalizer: Tensor


def _check_numbers(**options) -> None:
    """Scalar options are constants of the op: a tensor that requires grad would silently lose its gradient."""
    for name, value in options.items():
        if isinstance(value, Tensor) and value.requires_grad:
            raise TypeError(
                f"actattn: {name} is a constant of the op and gets no gradient; got a tensor that requires grad. "
                f"Pass a Python float ({name}.item()), or {name}.detach() if no gradient is wanted"
            )


def _dropout_seed(q: Tensor) -> Tensor:
    """The key of one call's dropout mask, from the default generator of q's device."""
    # Out of place (torch.compile traces randint, not random_), over the whole int64 range.
    return torch.randint(-(2**63), 2**63 - 1, (1,), dtype=torch.int64, device=q.device)


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
    causal_alignment: str = "top_left",
    dropout_p: float = 0.0,
    window: Optional[Tuple[Optional[int], Optional[int]]] = None,
    return_lse: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Quadratic attention ``O = act(scale * Q K^T + bias) / divisor @ V``, never materialising N x N.

    Args:
        q: ``(B, H, Nq, Dk)``. k: ``(B, Hkv, Nk, Dk)``. v: ``(B, Hkv, Nk, Dv)``. Dk, Dv in 1..256.
            ``Hkv`` divides ``H``: with fewer key/value heads than query heads (grouped-query or
            multi-query attention) key/value head ``h // (H // Hkv)`` serves query head ``h``, read in
            place (no copies); the backward returns ``dk``, ``dv`` summed over each group.
        activation: the score activation, one of :data:`SCORE_ACTIVATIONS`.
            ``"softmax"``: row-wise softmax (Vaswani et al. 2017), computed flash-style; only the row
            log-sum-exp is kept for backward. ``bias`` and ``divisor`` must be None.
            ``"sigmoid"``: ``sigmoid(s + bias) / divisor`` with ``bias = -log(Nk)`` and ``divisor = 1``
            by default (Ramapuram et al. 2024).
            ``"relu"``: ``relu(s + bias) / divisor`` with ``bias = 0`` and ``divisor = Nk`` by default
            (Wortsman et al. 2023).
        causal: a query sees no later key; ``causal_alignment`` says how queries line up with keys.
        causal_alignment: one of :data:`CAUSAL_ALIGNMENTS`. ``"top_left"`` (default, as
            ``F.scaled_dot_product_attention(is_causal=True)``): query ``i`` sees keys ``j <= i``.
            ``"bottom_right"`` (FlashAttention >= 2.1; what a KV cache needs): the last query sees every
            key, query ``i`` sees ``j <= i + n - Nq`` for a sequence of ``n`` keys (its key length when
            ``key_lengths`` is given), so decoding the new queries against a cache equals the full causal
            run. With more queries than keys the first queries then see no key and give zeros.
            Ignored when ``causal`` is False.
        scale: multiplies ``Q K^T``; default ``1 / sqrt(Dk)``.
        key_lengths: optional ``(B,)`` integer tensor: sequence ``b`` has keys ``0 .. key_lengths[b] - 1``;
            the others are padding and take no part (values are clamped to ``[0, Nk]``). The
            length-dependent defaults (sigmoid's bias, relu's divisor) then use each sequence's length.
        dropout_p: attention dropout, as ``F.scaled_dot_product_attention``'s: each weight ``p_ij`` is
            dropped with probability ``dropout_p`` and the others are scaled by ``1 / (1 - dropout_p)``.
            Applied whenever it is > 0 (pass ``dropout_p if self.training else 0.0``). The mask comes
            from a counter-based generator (Philox) keyed by a seed drawn from the default generator of
            q's device, so ``torch.manual_seed`` makes it reproducible, and the backward regenerates it
            instead of storing it. Softmax's row sums (and the log-sum-exp) are those of the undropped
            weights, as torch's.
        window: sliding-window attention, ``(left, right)``: query ``i`` sees keys ``i + o - left`` to
            ``i + o + right``, where ``o`` is the offset ``causal_alignment`` gives (0 top-left; the
            sequence's key count minus ``Nq`` bottom-right, so that decoding with a cache keeps each
            query's window); ``None`` for a side leaves it unbounded. ``causal=True`` with
            ``window=(w, 0)`` (or ``(w, None)``) is causal attention over the last ``w + 1`` keys
            (Mistral's, Longformer's local attention). Whole key tiles outside every query's window are
            skipped, so the cost is O(N w).
        return_lse: softmax only: also return the row log-sum-exp ``(B, H, Nq)`` in float32 (float64 for
            float64 inputs), ``-inf`` for a query that sees no key, to merge attention computed over
            separate key blocks (split-KV, ring attention). It carries no gradient.

    Returns:
        ``(B, H, Nq, Dv)`` in the dtype of q, or ``(out, lse)`` with ``return_lse``. A query that sees no
        key gets zeros.
    """
    _check_numbers(scale=scale, bias=bias, divisor=divisor, dropout_p=dropout_p)
    options = dict(
        activation=activation,
        causal=causal,
        scale=scale,
        bias=bias,
        divisor=divisor,
        causal_alignment=causal_alignment,
        dropout_p=dropout_p,
        window_left=-1,
        window_right=-1,
        key_lengths=key_lengths,
        dropout_seed=_dropout_seed(q) if dropout_p > 0 else None,
    )
    if window is not None:
        if len(window) != 2 or any(w is not None and (isinstance(w, bool) or not isinstance(w, int)) for w in window):
            raise TypeError(f"actattn.attention: window must be (left, right), each an int or None; got {window!r}")
        if any(w is not None and w < 0 for w in window):
            raise ValueError(f"actattn.attention: window sides must be >= 0 (None: unbounded); got {window!r}")
        options["window_left"], options["window_right"] = (-1 if w is None else w for w in window)
    if return_lse:
        if activation != "softmax":
            raise ValueError(
                f"actattn.attention: return_lse=True needs activation='softmax' (only softmax normalises rows "
                f"by a log-sum-exp); got {activation!r}"
            )
        return ops.attention_with_lse(q, k, v, **options)
    return ops.attention(q, k, v, **options)


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
        q: ``(B, H, Nq, Dk)``. k: ``(B, Hkv, Nk, Dk)``. v: ``(B, Hkv, Nk, Dv)``. Dk, Dv in 1..256.
            ``Hkv`` divides ``H`` (grouped-query attention); the state is one per key/value head.
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
        q,
        k,
        v,
        feature_map=feature_map,
        causal=causal,
        normalize=normalize,
        eps=eps,
        scale=scale,
        initial_state=state_kv,
        initial_normalizer=state_normalizer,
        key_lengths=key_lengths,
    )
    if return_state:
        return out, LinearAttentionState(kv, normalizer)
    return out


def _as_heads_layout(t: Tensor, name: str) -> Tensor:
    """SDPA's ``(N, ..., H, L, E)`` (or ``(N, L, E)``, ``(L, E)``) as actattn's ``(B, H, L, E)``."""
    if t.dim() < 2:
        raise ValueError(f"actattn.scaled_dot_product_attention: {name} must have at least 2 dimensions, got {t.dim()}")
    if t.dim() == 2:
        return t.unsqueeze(0).unsqueeze(0)
    if t.dim() == 3:
        return t.unsqueeze(1)
    return t.reshape(-1, *t.shape[-3:])


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Optional[Tensor] = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    *,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
    activation: str = "softmax",
    bias: Optional[float] = None,
    divisor: Optional[float] = None,
    key_lengths: Optional[Tensor] = None,
) -> Tensor:
    """``torch.nn.functional.scaled_dot_product_attention`` with a choice of score activation.

    Same signature, shapes and semantics as torch's: ``query`` ``(N, ..., Hq, L, E)``, ``key``
    ``(N, ..., H, S, E)``, ``value`` ``(N, ..., H, S, Ev)`` (3-D ``(N, L, E)`` and 2-D ``(L, E)`` too),
    output ``(N, ..., Hq, L, Ev)``; ``is_causal`` masks top-left aligned; ``scale`` defaults to
    ``1 / sqrt(E)``; ``enable_gqa`` lets ``H`` divide ``Hq``. With ``activation="softmax"`` (the default)
    it computes what torch's does. ``activation``, ``bias``, ``divisor`` and ``key_lengths`` are
    :func:`attention`'s options.

    ``attn_mask`` may be torch's causal bias (``torch.nn.attention.bias.causal_upper_left`` /
    ``causal_lower_right``): the causal mask aligned top-left or bottom-right (``causal_alignment``).
    What it cannot do raises ``NotImplementedError`` naming the argument: any other ``attn_mask`` (an
    arbitrary mask would need the ``L x S`` matrix the kernels never build; use ``is_causal`` and
    ``key_lengths`` for causal and key-padding masks). ``dropout_p`` is :func:`attention`'s attention
    dropout, applied whenever it is > 0, as torch's.
    """
    op = "actattn.scaled_dot_product_attention"
    causal_alignment = "top_left"
    if isinstance(attn_mask, CausalBias):
        if is_causal:
            raise ValueError(f"{op}: pass either is_causal=True or a causal attn_mask, not both (as torch's SDPA)")
        is_causal = True
        causal_alignment = "bottom_right" if attn_mask.variant == CausalVariant.LOWER_RIGHT else "top_left"
        attn_mask = None
    if attn_mask is not None:
        raise NotImplementedError(
            f"{op}: attn_mask is not supported (an arbitrary mask needs the L x S matrix the kernels never "
            "build); use is_causal=True for a causal mask and key_lengths= for key padding"
        )
    if query.dim() != key.dim() or key.dim() != value.dim():
        raise ValueError(
            f"{op}: query, key and value must have the same number of dimensions, got {tuple(query.shape)}, "
            f"{tuple(key.shape)}, {tuple(value.shape)}"
        )
    if query.shape[:-3] != key.shape[:-3] or key.shape[:-3] != value.shape[:-3]:
        raise ValueError(
            f"{op}: query, key and value must have the same batch dimensions (no broadcasting), got "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    if query.dim() >= 4 and query.shape[-3] != key.shape[-3] and not enable_gqa:
        raise ValueError(
            f"{op}: query has {query.shape[-3]} heads and key/value {key.shape[-3]}; pass enable_gqa=True for "
            "grouped-query attention"
        )
    q, k, v = (_as_heads_layout(t, name) for t, name in ((query, "query"), (key, "key"), (value, "value")))
    if key_lengths is not None and query.dim() >= 4:
        key_lengths = key_lengths.reshape(-1)
    out = attention(
        q,
        k,
        v,
        activation=activation,
        causal=is_causal,
        scale=scale,
        bias=bias,
        divisor=divisor,
        key_lengths=key_lengths,
        causal_alignment=causal_alignment,
        dropout_p=dropout_p,
    )
    return out.reshape(*query.shape[:-1], value.shape[-1])
