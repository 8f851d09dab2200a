"""actattn inside models that call attention themselves: a context manager that routes
``torch.nn.functional.scaled_dot_product_attention`` to actattn, and registration with Hugging Face
transformers' attention interface (``attn_implementation="actattn_sigmoid"``, ...)."""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .functional import SCORE_ACTIVATIONS, attention, scaled_dot_product_attention

TRANSFORMERS_PREFIX = "actattn_"


@contextlib.contextmanager
def routed_sdpa(activation: str = "softmax", **options) -> Iterator[None]:
    """Inside the block, every call of ``torch.nn.functional.scaled_dot_product_attention`` runs
    :func:`actattn.scaled_dot_product_attention` with ``activation`` (and ``options``: ``bias``,
    ``divisor``). What actattn cannot do (an arbitrary ``attn_mask``) raises rather than silently
    running torch's softmax. Code that bound the function before the block
    (``from torch.nn.functional import scaled_dot_product_attention``) is not routed. Not thread-safe:
    it swaps a module attribute.
    """
    if activation not in SCORE_ACTIVATIONS:
        raise ValueError(f"actattn.routed_sdpa: activation must be one of {SCORE_ACTIVATIONS}; got {activation!r}")
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = functools.partial(scaled_dot_product_attention, activation=activation, **options)
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def _fixed_constants(activation: str, key_count: Optional[int]) -> dict:
    """Sigmoid's bias and relu's divisor for key_count keys (none: each call's own key count)."""
    if key_count is None or activation == "softmax":
        return {}
    return {"bias": -math.log(key_count)} if activation == "sigmoid" else {"divisor": float(key_count)}


def _mask_as_key_lengths(mask: Tensor, query: Tensor, key: Tensor, causal: bool, window: Optional[Tuple[int, int]],
                         name: str):
    """The key lengths and causal alignment that give exactly transformers' (B, 1, Nq, Nk) mask (bool, True
    = attend, or additive float, 0 = attend) on top of the call's causality and window: right padding
    in a batch (prefill or training, as many queries as keys) or no padding at all. Anything else (left
    padding, a padded key/value cache, a custom mask) raises NotImplementedError saying which. The check
    compares the whole mask, once per call: O(B Nq Nk) elementwise work, as transformers' building it."""
    batch, q_len, k_len = query.shape[0], query.shape[-2], key.shape[-2]
    attend = (mask if mask.dtype == torch.bool else mask == 0).to(query.device).expand(batch, 1, q_len, k_len)
    seen = attend.any(dim=2).view(batch, k_len)  # the keys some query sees
    # One past the last key any query sees: the sequence's length when the batch is right-padded.
    lengths = torch.where(seen.any(dim=-1), k_len - seen.flip(-1).int().argmax(dim=-1), 0)
    alignment = "top_left" if q_len == k_len else "bottom_right"
    # What the kernels will attend to with these lengths (functional.attention's mask, key_lengths.h).
    i = torch.arange(q_len, device=query.device).view(1, 1, -1, 1)
    j = torch.arange(k_len, device=query.device).view(1, 1, 1, -1)
    diagonal = i + (0 if alignment == "top_left" else (lengths - q_len).view(-1, 1, 1, 1))
    expected = j < lengths.view(-1, 1, 1, 1)
    if causal:
        expected = expected & (j <= diagonal)
    if window is not None:
        expected = expected & (j >= diagonal - window[0]) & (j <= diagonal + window[1])
    if not torch.equal(attend, expected):
        left_padded = causal and not bool(attend[:, 0, -1, 0].all())
        found = "a left-padded batch (pad on the right: tokenizer.padding_side = 'right')" if left_padded else (
            "a mask that is not right padding of the keys (a padded key/value cache or a custom mask)")
        raise NotImplementedError(f"attn_implementation={name!r} got {found}; it runs unpadded or right-padded batches")
    unpadded = bool((lengths == k_len).all())
    return {"key_lengths": None if unpadded else lengths, "causal_alignment": "bottom_right" if unpadded else alignment}


def _transformers_attention(activation: str, key_count: Optional[int]):
    """An attention function with transformers' AttentionInterface signature."""
    constants = _fixed_constants(activation, key_count)

    def forward(
        module: torch.nn.Module,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Optional[Tensor],
        dropout: float = 0.0,
        scaling: Optional[float] = None,
        is_causal: Optional[bool] = None,
        sliding_window: Optional[int] = None,
        **kwargs,
    ) -> Tuple[Tensor, None]:
        name = f"{TRANSFORMERS_PREFIX}{activation}"
        unsupported = [k for k in ("softcap", "position_bias", "s_aux") if kwargs.get(k) is not None]
        if unsupported:
            raise NotImplementedError(f"attn_implementation={name!r} does not support {', '.join(unsupported)}")
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        # transformers' sliding windows: causal, position p sees keys p - sliding_window < k <= p;
        # bidirectional, keys at most sliding_window away.
        window = None
        if sliding_window is not None:
            window = (sliding_window - 1, 0) if causal else (sliding_window, sliding_window)
        # Bottom-right: with a key/value cache the new queries are the last positions (decoding); without
        # one (as many queries as keys) it is the ordinary causal mask.
        masking = {"key_lengths": None, "causal_alignment": "bottom_right"}
        if attention_mask is not None:
            masking = _mask_as_key_lengths(attention_mask, query, key, causal, window, name)
        out = attention(
            query, key, value, activation=activation, causal=causal, scale=scaling, dropout_p=dropout, window=window,
            **masking, **constants,
        )
        return out.transpose(1, 2).contiguous(), None

    return forward


def register_with_transformers(key_count: Optional[int] = None) -> Tuple[str, ...]:
    """Registers ``actattn_softmax``, ``actattn_sigmoid`` and ``actattn_relu`` with transformers'
    ``AttentionInterface``, so that ``AutoModel.from_config(config, attn_implementation="actattn_relu")``
    (or ``from_pretrained``) runs actattn's kernels, grouped-query heads and KV-cache decoding included.
    Padded batches run when padded on the right (the mask becomes key lengths; left padding raises,
    naming it), sliding-window layers run with actattn's window; softcapping raises.
    Attention dropout is the model's (transformers passes ``attention_dropout`` in training only).
    Returns the names.

    ``key_count`` fixes the key count that sigmoid's bias (``-log n``) and relu's divisor (``n``)
    assume. By default each call uses its own, so in a model of several layers decoding against a
    key/value cache (earlier positions computed with fewer keys) differs from recomputing the whole
    sequence; set it (e.g. to the training length) to make every call use the same constants.
    """
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError as error:
        raise ImportError("actattn.register_with_transformers needs transformers: pip install transformers") from error
    names = []
    for activation in SCORE_ACTIVATIONS:
        name = f"{TRANSFORMERS_PREFIX}{activation}"
        AttentionInterface.register(name, _transformers_attention(activation, key_count))
        # SDPA's mask builder: no mask for plain causal calls (prefill or decoding), a mask tensor when
        # the batch is padded, which the attention function turns into key lengths (or refuses). Without
        # a builder transformers would pass no mask at all and padding would be silently ignored.
        AttentionMaskInterface.register(name, sdpa_mask)
        names.append(name)
    return tuple(names)
