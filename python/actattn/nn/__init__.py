"""Modules: a drop-in nn.MultiheadAttention, a swap helper, and small transformer building blocks."""

from .blocks import CausalSelfAttention, DecoderBlock, DecoderLM
from .kinds import KINDS, AttentionKind, get_kind
from .multihead import MultiheadAttention
from .swap import swap_attention

__all__ = [
    "KINDS",
    "AttentionKind",
    "CausalSelfAttention",
    "DecoderBlock",
    "DecoderLM",
    "MultiheadAttention",
    "get_kind",
    "swap_attention",
]
