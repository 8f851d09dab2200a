"""actattn.nn.MultiheadAttention: a drop-in for torch.nn.MultiheadAttention with a choice of attention."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kinds import get_kind


def _no_op_pre_hook(module, args):
    return None


class MultiheadAttention(nn.Module):
    """``torch.nn.MultiheadAttention``'s constructor, parameters (same names, same state_dict) and
    ``forward``, computed by actattn's kernels with the attention kind named by ``attention``:
    ``softmax``, ``sigmoid``, ``relu``, ``linear-identity``, ``linear-relu`` or ``linear-elu``.

    What the kernels cannot do raises instead of silently computing something else:
    ``attn_mask`` must be a causal mask (or absent; ``is_causal=True`` alone is enough),
    ``key_padding_mask`` must pad at the end of each sequence (right padding), attention dropout in
    training (``dropout > 0``) needs a quadratic kind (linear attention forms no weights to drop), and
    ``add_bias_kv`` / ``add_zero_attn`` are not supported. Dropout applies in training only, as torch's.
    ``need_weights=True`` (the default, as torch's) materialises the (B, L, S) weights for inspection;
    pass ``need_weights=False`` (as ``nn.TransformerEncoderLayer`` does) to skip them.
    Under ``torch.compile(fullgraph=True)`` masks work without graph breaks; a causal ``attn_mask``
    then needs ``is_causal=True``, torch's hint, since its values are only checked when the graph runs.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: Optional[int] = None,
        vdim: Optional[int] = None,
        batch_first: bool = False,
        device=None,
        dtype=None,
        attention: str = "softmax",
    ) -> None:
        super().__init__()
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("actattn.nn.MultiheadAttention: add_bias_kv and add_zero_attn are not supported")
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})")
        factory = {"device": device, "dtype": dtype}
        self.kind = get_kind(attention)
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **factory))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim, **factory))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim, **factory))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False
        self._reset_parameters()
        # torch's Transformer layers take a fused softmax fast path, reading this module's weights and
        # bypassing its forward, unless a hook is attached: this no-op hook keeps every call here.
        self.register_forward_pre_hook(_no_op_pre_hook)

    def _reset_parameters(self) -> None:
        # As torch.nn.MultiheadAttention does.
        if self._qkv_same_embed_dim:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            for weight in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                nn.init.xavier_uniform_(weight)
        if self.in_proj_bias is not None:
            nn.init.constant_(self.in_proj_bias, 0.0)
            nn.init.constant_(self.out_proj.bias, 0.0)

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention, attention: str) -> "MultiheadAttention":
        """A copy of ``module`` (same configuration and weights) computing ``attention``."""
        if module.bias_k is not None or module.add_zero_attn:
            raise NotImplementedError("actattn: cannot swap a MultiheadAttention with add_bias_kv or add_zero_attn")
        weight = module.in_proj_weight if module._qkv_same_embed_dim else module.q_proj_weight
        new = cls(
            module.embed_dim, module.num_heads, dropout=module.dropout, bias=module.in_proj_bias is not None,
            kdim=module.kdim, vdim=module.vdim, batch_first=module.batch_first, device=weight.device,
            dtype=weight.dtype, attention=attention,
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, attention={self.kind.name!r}"

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Optional[Tensor] = None,
        need_weights: bool = True,
        attn_mask: Optional[Tensor] = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        batched = query.dim() == 3
        if not batched:  # (L, E): add a batch dim
            query, key, value = (t.unsqueeze(0 if self.batch_first else 1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, q_len, _ = query.shape
        k_len = key.shape[1]
        causal = _causal_from_mask(attn_mask, is_causal, q_len, k_len)
        key_lengths = _lengths_from_padding_mask(key_padding_mask, batch, k_len)

        q, k, v = self._project(query, key, value)
        out = self.kind(q, k, v, causal, key_lengths, self.dropout if self.training else 0.0)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, q_len, self.embed_dim))
        if not self.batch_first:
            out = out.transpose(0, 1)
        weights = None
        if need_weights:
            weights = self.kind.weights(q, k, causal, key_lengths)
            if average_attn_weights:
                weights = weights.mean(dim=1)
        if not batched:
            out = out.squeeze(0 if self.batch_first else 1)
            weights = weights.squeeze(0) if weights is not None else None
        return out, weights

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """q, k, v as (B, H, N, head_dim) from (B, N, E) inputs."""
        e = self.embed_dim
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.split(e)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.split(e)
        heads = []
        for x, w, b in ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v)):
            y = F.linear(x, w, b)
            heads.append(y.view(y.shape[0], y.shape[1], self.num_heads, self.head_dim).transpose(1, 2))
        return heads[0], heads[1], heads[2]


def _blocked(mask: Tensor, name: str) -> Tensor:
    """Boolean 'may not attend' from a bool mask (True = blocked) or an additive float mask (-inf = blocked)."""
    if mask.dtype == torch.bool:
        return mask
    if not mask.is_floating_point():
        raise TypeError(f"actattn: {name} must be a bool or float tensor, got {mask.dtype}")
    only_blocks = ((mask == 0) | (mask == float("-inf"))).all()
    message = f"actattn: {name} may hold only 0 and -inf (additive score biases are not supported)"
    if torch.compiler.is_compiling():
        torch._assert_async(only_blocks, message)
    elif not only_blocks:
        raise NotImplementedError(message)
    return mask == float("-inf")


def _causal_from_mask(attn_mask: Optional[Tensor], is_causal: bool, q_len: int, k_len: int) -> bool:
    """Whether the call is causal: attn_mask must be absent, empty of blocks, or the causal mask.

    Under torch.compile the mask's values are not known while tracing, so ``is_causal`` (torch's hint
    that attn_mask is causal) decides, and the check that the mask agrees runs in the graph
    (``torch._assert_async``): no graph break, and a wrong mask still raises."""
    if attn_mask is None:
        return is_causal
    if attn_mask.dim() != 2 or attn_mask.shape != (q_len, k_len):
        raise NotImplementedError(
            f"actattn: attn_mask must be a ({q_len}, {k_len}) causal mask; got shape {tuple(attn_mask.shape)}"
        )
    blocked = _blocked(attn_mask, "attn_mask")
    causal_blocks = torch.ones(q_len, k_len, dtype=torch.bool, device=blocked.device).triu(diagonal=1)
    message = "actattn: attn_mask must be the causal mask (query i sees keys j <= i); got another mask"
    if torch.compiler.is_compiling():
        if not is_causal:
            raise NotImplementedError(
                "actattn: under torch.compile pass is_causal=True with a causal attn_mask (the mask's values are "
                "not known while tracing)"
            )
        torch._assert_async((blocked == causal_blocks).all(), message)
        return True
    if torch.equal(blocked, causal_blocks):
        return True
    if not blocked.any() and not is_causal:
        return False
    raise NotImplementedError(message)


def _lengths_from_padding_mask(mask: Optional[Tensor], batch: int, k_len: int) -> Optional[Tensor]:
    """(B,) key lengths from a right-padding key_padding_mask (True or -inf = padding)."""
    if mask is None:
        return None
    if mask.shape != (batch, k_len):
        raise ValueError(f"actattn: key_padding_mask must have shape ({batch}, {k_len}); got {tuple(mask.shape)}")
    padding = _blocked(mask, "key_padding_mask")
    lengths = (~padding).sum(dim=1)
    expected = torch.arange(k_len, device=padding.device) >= lengths.unsqueeze(1)
    message = "actattn: key_padding_mask must pad at the end of each sequence (right padding); got padding elsewhere"
    if torch.compiler.is_compiling():  # checked in the graph: no data-dependent branch while tracing
        torch._assert_async((padding == expected).all(), message)
    elif not torch.equal(padding, expected):
        raise NotImplementedError(message)
    return lengths
