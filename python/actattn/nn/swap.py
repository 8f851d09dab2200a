"""swap_attention: put actattn's attention into an existing model."""

from __future__ import annotations

from torch import nn

from .kinds import get_kind
from .multihead import MultiheadAttention


def swap_attention(model: nn.Module, attention: str) -> nn.Module:
    """Replaces, in place, every ``torch.nn.MultiheadAttention`` in ``model`` by an
    ``actattn.nn.MultiheadAttention`` computing ``attention``, with the same configuration and weights.
    With ``attention="softmax"`` the model computes what it computed before. actattn modules already in
    the model switch to ``attention``. Returns ``model``.

    ``nn.TransformerEncoder``'s nested-tensor path is switched off (it would bypass the new modules).
    """
    for name, child in model.named_children():
        if isinstance(child, nn.MultiheadAttention):
            setattr(model, name, MultiheadAttention.from_torch(child, attention))
        elif isinstance(child, MultiheadAttention):
            child.kind = get_kind(attention)
        else:
            swap_attention(child, attention)
    if isinstance(model, nn.TransformerEncoder):
        model.use_nested_tensor = False
    return model
