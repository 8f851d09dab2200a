"""Loads the compiled operators; every other module reaches them as torch.ops.actattn.*."""

import torch

from . import _C  # noqa: F401  (registers torch.ops.actattn)

ops = torch.ops.actattn
