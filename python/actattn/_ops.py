"""Loads the compiled operators; every other module reaches them as torch.ops.actattn.*."""

import torch

from . import _C  # registers torch.ops.actattn

ops = torch.ops.actattn

# The option names, from the table the C++ ops parse with (csrc/names.h).
SCORE_ACTIVATIONS = _C.SCORE_ACTIVATIONS
FEATURE_MAPS = _C.FEATURE_MAPS
CAUSAL_ALIGNMENTS = _C.CAUSAL_ALIGNMENTS
