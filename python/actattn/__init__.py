"""actattn: attention with softmax, sigmoid, ReLU and linear (feature-map) activations.

Forward and backward kernels for CPU (and CUDA where built), registered as torch custom ops under
``torch.ops.actattn`` with autograd, fake tensors for ``torch.compile``, and a LibTorch C++ API.
"""

from . import nn, reference
from ._ops import ops
from .functional import (
    CAUSAL_ALIGNMENTS,
    FEATURE_MAPS,
    SCORE_ACTIVATIONS,
    LinearAttentionState,
    attention,
    linear_attention,
    scaled_dot_product_attention,
)
from .integrations import register_with_transformers, routed_sdpa
from .nn import swap_attention

__all__ = [
    "CAUSAL_ALIGNMENTS",
    "FEATURE_MAPS",
    "SCORE_ACTIVATIONS",
    "LinearAttentionState",
    "attention",
    "linear_attention",
    "nn",
    "ops",
    "reference",
    "register_with_transformers",
    "routed_sdpa",
    "scaled_dot_product_attention",
    "swap_attention",
]
__version__ = "0.1.0"

