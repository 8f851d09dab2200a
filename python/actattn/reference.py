"""Short, obviously-correct PyTorch versions of every actattn op.

They materialise what the kernels avoid (the N x N score matrix, one D x Dv state per position) and
compute in the dtype they are given, so the tests use them both as the float64 truth and as the
"torch composite in the same dtype" of the low-precision error rule. Defaults match the kernels'.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)


def causal_mask(q_len: int, k_len: int, device=None, offsets: Optional[Tensor] = None) -> Tensor:
    """Query i sees key j iff j <= i + offset: (Nq, Nk) with offset 0 (top-left aligned, like SDPA's
    is_causal), or (B, 1, Nq, Nk) with one offset per sequence (bottom-right: its keys - Nq)."""
    if offsets is None:
        return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril()
    i = torch.arange(q_len, device=device).view(-1, 1)
    j = torch.arange(k_len, device=device).view(1, -1)
    return j <= i + offsets.to(device).view(-1, 1, 1, 1)


def repeat_kv_heads(t: Tensor, heads: int) -> Tensor:
    """Grouped-query attention: (B, Hkv, N, D) -> (B, heads, N, D), each stored head serving
    heads / Hkv consecutive query heads."""
    return t.repeat_interleave(heads // t.shape[1], dim=1)


def key_mask(key_lengths: Optional[Tensor], batch: int, k_len: int, device=None) -> Tensor:
    """(B, 1, 1, Nk) bool: True for real keys, False for padding."""
    if key_lengths is None:
        return torch.ones(batch, 1, 1, k_len, dtype=torch.bool, device=device)
    return (torch.arange(k_len, device=device) < key_lengths.to(device).view(-1, 1, 1, 1))


def causal_offsets(q: Tensor, k: Tensor, key_lengths: Optional[Tensor], causal_alignment: str) -> Optional[Tensor]:
    """None top-left; bottom-right, each sequence's key count minus Nq."""
    if causal_alignment == "top_left":
        return None
    if causal_alignment != "bottom_right":
        raise ValueError(f"unknown causal_alignment {causal_alignment!r}")
    k_len = k.shape[-2]
    keys = torch.full((q.shape[0],), k_len) if key_lengths is None else key_lengths.cpu().clamp(0, k_len)
    return keys - q.shape[-2]


_LOW32 = 0xFFFFFFFF


def _mul_hi_lo(a: int, x: Tensor) -> Tuple[Tensor, Tensor]:
    """High and low 32 bits of a * x for a, x < 2^32 (x an int64 tensor), in 16-bit halves so that no
    product overflows int64."""
    high_part, low_part = a * (x >> 16), a * (x & 0xFFFF)  # a * x = high_part * 2^16 + low_part
    low_sum = low_part + ((high_part & 0xFFFF) << 16)
    return (high_part >> 16) + (low_sum >> 32), low_sum & _LOW32


def philox4x32_10(counter: Tuple[Tensor, Tensor, Tensor, Tensor], seed: int) -> Tuple[Tensor, ...]:
    """Philox4x32-10 (Salmon et al. 2011) of four int64 tensors of 32-bit words under a 64-bit key."""
    c0, c1, c2, c3 = counter
    k0, k1 = seed & _LOW32, (seed >> 32) & _LOW32
    for _ in range(10):
        hi0, lo0 = _mul_hi_lo(0xD2511F53, c0)
        hi1, lo1 = _mul_hi_lo(0xCD9E8D57, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + 0x9E3779B9) & _LOW32, (k1 + 0xBB67AE85) & _LOW32
    return c0, c1, c2, c3


def dropout_multipliers(seed: int, shape: Tuple[int, int, int, int], p: float, device=None) -> Tensor:
    """(B, H, Nq, Nk) float64: each weight's dropout factor, 1 / (1 - p) kept or 0 dropped, as the kernels
    draw it (kernels/dropout.h): word (key % 4) of Philox at counter (key / 4, row, row >> 32, 0),
    row = (b * H + h) * Nq + i, kept iff below floor((1 - p) * 2^32)."""
    batch, heads, q_len, k_len = shape
    rows = torch.arange(batch * heads * q_len, device=device).view(batch, heads, q_len, 1)
    keys = torch.arange(k_len, device=device).expand(batch, heads, q_len, k_len)
    rows = rows.expand_as(keys)
    words = philox4x32_10((keys >> 2, rows & _LOW32, rows >> 32, torch.zeros_like(keys)), seed & (2**64 - 1))
    word = torch.stack(words, dim=-1).gather(-1, (keys & 3).unsqueeze(-1)).squeeze(-1)
    kept = word < int((1.0 - p) * 4294967296.0)
    return kept.double() * (1.0 / (1.0 - p) if p < 1.0 else 0.0)


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    activation: str = "softmax",
    causal: bool = False,
    scale: Optional[float] = None,
    bias: Optional[float] = None,
    divisor: Optional[float] = None,
    key_lengths: Optional[Tensor] = None,
    causal_alignment: str = "top_left",
    dropout_p: float = 0.0,
    dropout_seed: Optional[Tensor] = None,
    window_left: int = -1,
    window_right: int = -1,
) -> Tensor:
    k, v = repeat_kv_heads(k, q.shape[1]), repeat_kv_heads(v, q.shape[1])
    batch, k_len = q.shape[0], k.shape[-2]
    # Keys per sequence, at least 1 so that the length-dependent defaults stay finite.
    keys = (torch.full((batch,), k_len) if key_lengths is None else key_lengths.cpu().clamp(0, k_len)).clamp(min=1)
    keys = keys.to(device=q.device, dtype=q.dtype).view(-1, 1, 1, 1)
    scale = default_scale(q.shape[-1]) if scale is None else scale
    scores = scale * (q @ k.transpose(-2, -1))
    visible = key_mask(key_lengths, batch, k_len, q.device)
    if causal:
        offsets = causal_offsets(q, k, key_lengths, causal_alignment)
        visible = visible & causal_mask(q.shape[-2], k_len, q.device, offsets)
    if window_left >= 0 or window_right >= 0:
        # Query i sees keys i + offset - left .. i + offset + right (offset as the causal mask's).
        offsets = causal_offsets(q, k, key_lengths, causal_alignment)
        offsets = torch.zeros(batch, dtype=torch.long) if offsets is None else offsets
        i = torch.arange(q.shape[-2], device=q.device).view(1, 1, -1, 1)
        j = torch.arange(k_len, device=q.device).view(1, 1, 1, -1)
        diagonal = i + offsets.to(q.device).view(-1, 1, 1, 1)
        if window_left >= 0:
            visible = visible & (j >= diagonal - window_left)
        if window_right >= 0:
            visible = visible & (j <= diagonal + window_right)
    if activation == "softmax":
        scores = scores.masked_fill(~visible, float("-inf"))
        # A row without any visible key gives 0, not the NaN of softmax over nothing; a NaN from the
        # inputs stays NaN.
        probs = torch.where(visible.any(dim=-1, keepdim=True), scores.softmax(dim=-1), 0.0)
    elif activation == "sigmoid":
        bias = -keys.log() if bias is None else bias
        probs = torch.sigmoid(scores + bias) / (1.0 if divisor is None else divisor)
    elif activation == "relu":
        bias = 0.0 if bias is None else bias
        probs = F.relu(scores + bias) / (keys if divisor is None else divisor)
    else:
        raise ValueError(f"unknown activation {activation!r}")
    probs = probs * visible
    if dropout_p > 0:
        # After softmax normalised the undropped weights, as torch's dropout(softmax(s)).
        shape = (q.shape[0], q.shape[1], q.shape[2], k_len)
        probs = probs * dropout_multipliers(int(dropout_seed.item()), shape, dropout_p, q.device).to(probs.dtype)
    return probs @ v


def feature_map(x: Tensor, name: str) -> Tensor:
    if name == "identity":
        return x
    if name == "relu":
        return F.relu(x)
    if name == "elu":
        return F.elu(x) + 1
    raise ValueError(f"unknown feature map {name!r}")


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    feature_map_name: str = "elu",
    causal: bool = False,
    normalize: bool = True,
    eps: float = 1e-6,
    scale: Optional[float] = None,
    initial_state: Optional[Tuple[Tensor, Tensor]] = None,
    key_lengths: Optional[Tensor] = None,
) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
    """Returns (out, (kv, normalizer)) where kv and normalizer are the state after all keys, one per
    key/value head (grouped-query attention: k and v may have fewer heads than q)."""
    scale = default_scale(q.shape[-1]) if scale is None else scale
    a = scale * feature_map(q, feature_map_name)
    padding = ~key_mask(key_lengths, q.shape[0], k.shape[-2], q.device).transpose(-2, -1)  # (B, 1, Nk, 1)
    b = feature_map(k, feature_map_name).masked_fill(padding, 0.0)
    v = v.masked_fill(padding, 0.0)
    batch, heads, qk_dim = k.shape[0], k.shape[1], k.shape[-1]  # the state's heads: key/value heads
    v_dim = v.shape[-1]
    if initial_state is None:
        kv0 = q.new_zeros(batch, heads, qk_dim, v_dim)
        z0 = q.new_zeros(batch, heads, qk_dim)
    else:
        kv0, z0 = (t.to(q.dtype) for t in initial_state)
    outer = b.unsqueeze(-1) * v.unsqueeze(-2)  # (B, H, Nk, Dk, Dv): one state per position
    if causal:
        kv = kv0.unsqueeze(2) + outer.cumsum(dim=2)
        z = z0.unsqueeze(2) + b.cumsum(dim=2)
    else:
        kv = (kv0 + outer.sum(dim=2)).unsqueeze(2)
        z = (z0 + b.sum(dim=2)).unsqueeze(2)
    kv, z = repeat_kv_heads(kv, q.shape[1]), repeat_kv_heads(z, q.shape[1])  # each query head's state
    num = (a.unsqueeze(-1) * kv).sum(dim=-2)
    out = num / ((a * z).sum(dim=-1, keepdim=True) + eps) if normalize else num
    return out, (kv0 + outer.sum(dim=2), z0 + b.sum(dim=2))


def chunked_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    feature_map_name: str = "elu",
    causal: bool = False,
    normalize: bool = True,
    eps: float = 1e-6,
    scale: Optional[float] = None,
    chunk: int = 64,
) -> Tensor:
    """Linear attention as people write it in torch: matmuls, causal by chunks of ``chunk`` positions.

    Per chunk c: ``out_c = a_c @ S_<c + tril(a_c b_c^T) @ v_c`` with ``S_<c`` the exclusive prefix sum of
    ``b_c^T v_c`` over chunks (the denominator likewise). O(N D^2) memory, no per-position state. The
    tests use it as the "torch composite in the same dtype" of the low-precision error rule, and the
    benchmarks as the torch baseline.
    """
    scale = default_scale(q.shape[-1]) if scale is None else scale
    a = scale * feature_map(q, feature_map_name)
    b = feature_map(k, feature_map_name)
    if not causal:
        num = a @ (b.transpose(-2, -1) @ v)
        den = a @ b.sum(dim=-2, keepdim=True).transpose(-2, -1)
        return num / (den + eps) if normalize else num
    batch, heads, n, qk_dim = q.shape
    pad = (-n) % chunk
    a, b, v = (F.pad(t, (0, 0, 0, pad)) for t in (a, b, v))
    chunks = (n + pad) // chunk
    a, b, v = (t.reshape(batch, heads, chunks, chunk, t.shape[-1]) for t in (a, b, v))
    kv = b.transpose(-2, -1) @ v  # (B, H, chunks, Dk, Dv)
    prefix_kv = kv.cumsum(dim=2) - kv
    z = b.sum(dim=-2)  # (B, H, chunks, Dk)
    prefix_z = z.cumsum(dim=2) - z
    within = (a @ b.transpose(-2, -1)).tril()
    num = a @ prefix_kv + within @ v
    den = (a @ prefix_z.unsqueeze(-1)).squeeze(-1) + within.sum(dim=-1)
    out = num / (den + eps).unsqueeze(-1) if normalize else num
    return out.reshape(batch, heads, chunks * chunk, -1)[:, :, :n]
