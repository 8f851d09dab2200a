"""swap_attention: put actattn's attention into an existing model."""

from __future__ import annotations

import warnings

from torch import nn

from .kinds import get_kind
from .multihead import MultiheadAttention


def swap_attention(model: nn.Module, attention: str, *, strict: bool = False) -> nn.Module:
    """Replaces, in place, every ``torch.nn.MultiheadAttention`` in ``model`` by an
    ``actattn.nn.MultiheadAttention`` computing ``attention``, with the same configuration and weights.
    With ``attention="softmax"`` the model computes what it computed before. actattn modules already in
    the model switch to ``attention``. Returns ``model``.

    A model with no attention module to swap (one that calls ``F.scaled_dot_product_attention``
    itself, as Hugging Face models do) is left as it was with a warning, or a ``ValueError`` when
    ``strict``: a comparison that silently runs the original attention would be wrong.

    ``nn.TransformerEncoder``'s nested-tensor path is switched off (it would bypass the new modules).
    """
    kind = get_kind(attention)
    if _swap(model, attention) == 0:
        message = (
            f"actattn.swap_attention: {type(model).__name__} has no torch.nn.MultiheadAttention (or actattn "
            f"module) to swap, so it keeps its own attention, not {kind.name!r}"
        )
        if strict:
            raise ValueError(message)
        warnings.warn(message, stacklevel=2)
    return model


def _swap(model: nn.Module, attention: str) -> int:
    """Swaps below ``model``; returns how many attention modules now compute ``attention``."""
    swapped = 0
    for name, child in model.named_children():
        if isinstance(child, nn.MultiheadAttention):
            setattr(model, name, MultiheadAttention.from_torch(child, attention))
            swapped += 1
        elif isinstance(child, MultiheadAttention):
            child.kind = get_kind(attention)
            swapped += 1
        else:
            swapped += _swap(child, attention)
    if isinstance(model, nn.TransformerEncoder):
        model.use_nested_tensor = False
    return swapped
