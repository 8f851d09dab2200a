"""actattn: attention with softmax, sigmoid, ReLU and linear (feature-map) activations.

Forward and backward kernels for CPU (and CUDA where built), registered as torch custom ops under
``torch.ops.actattn`` with autograd, fake tensors for ``torch.compile``, and a LibTorch C++ API.
"""

import os

from . import nn, reference
from ._ops import cpu_isa, ops
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
    "cmake_prefix_path",
    "cpu_isa",
    "library_path",
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

# For C++ programs using the library this package carries (lib/libactattn.so, include/actattn/actattn.h):
# cmake -DCMAKE_PREFIX_PATH="$(python -c 'import actattn; print(actattn.cmake_prefix_path)')", then
# find_package(actattn) and target_link_libraries(app actattn::actattn), as with torch.utils.cmake_prefix_path.
cmake_prefix_path = os.path.join(os.path.dirname(__file__), "share", "cmake")
library_path = os.path.join(os.path.dirname(__file__), "lib", "libactattn.so")

