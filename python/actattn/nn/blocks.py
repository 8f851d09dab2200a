"""Small building blocks: causal self-attention, a pre-norm decoder block, a decoder-only LM."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .kinds import get_kind


class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention of one kind on (B, N, dim) inputs, fused q/k/v projection.

    ``observer``, when set, is called as ``observer(module, q, k, v, out)`` on every forward (the
    gradient-flow recorder uses it to see the attention's inputs and output)."""

    def __init__(self, dim: int, heads: int, attention: str = "softmax") -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.kind = get_kind(attention)
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.observer: Optional[Callable] = None

    def forward(self, x: Tensor, key_lengths: Optional[Tensor] = None) -> Tensor:
        batch, n, dim = x.shape
        q, k, v = self.qkv(x).view(batch, n, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = self.kind(q, k, v, True, key_lengths)
        if self.observer is not None:
            self.observer(self, q, k, v, out)
        return self.proj(out.transpose(1, 2).reshape(batch, n, dim))


class DecoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, attention: str = "softmax", mlp_ratio: int = 4,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, attention)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_lengths: Optional[Tensor] = None) -> Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), key_lengths))
        return x + self.dropout(self.mlp(self.norm2(x)))


class DecoderLM(nn.Module):
    """A small decoder-only language model: token + learned position embeddings, DecoderBlocks, a final
    LayerNorm and a head tied to the token embedding. forward(tokens (B, N)) -> logits (B, N, vocab)."""

    def __init__(self, vocab_size: int, dim: int = 128, heads: int = 4, layers: int = 4, max_len: int = 512,
                 attention: str = "softmax", dropout: float = 0.0) -> None:
        super().__init__()
        self.max_len = max_len
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads, attention, dropout=dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.tokens.weight
        nn.init.normal_(self.tokens.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)

    def forward(self, tokens: Tensor, key_lengths: Optional[Tensor] = None) -> Tensor:
        n = tokens.shape[1]
        if n > self.max_len:
            raise ValueError(f"sequence length {n} is over max_len {self.max_len}")
        x = self.tokens(tokens) + self.positions(torch.arange(n, device=tokens.device))
        for block in self.blocks:
            x = block(x, key_lengths)
        return self.head(self.norm(x))
