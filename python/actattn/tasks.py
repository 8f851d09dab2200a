"""Training tasks for the activation comparison. Every batch is a pure function of (seed, step), so
runs are reproducible, resumable mid-way, and shardable across processes without coordination."""

from __future__ import annotations

import sysconfig
from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import Tensor

IGNORE = -100  # target of positions that carry no loss


def _generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


class MQAR:
    """Multi-query associative recall (Arora et al. 2023, Zoology): a sequence lists key-value pairs,
    then asks for the values of keys it listed; the model must recall each value. Keys come from
    [1, vocab/2), values from [vocab/2, vocab). Loss and accuracy count only the answers."""

    metric = "accuracy"

    def __init__(self, vocab_size: int = 64, seq_len: int = 64, num_pairs: int = 8, seed: int = 0) -> None:
        if 2 * num_pairs >= seq_len or num_pairs >= vocab_size // 2 - 1:
            raise ValueError(f"MQAR: {num_pairs} pairs do not fit seq_len {seq_len} / vocab {vocab_size}")
        self.vocab_size, self.seq_len, self.num_pairs, self.seed = vocab_size, seq_len, num_pairs, seed

    def batch(self, step: int, batch_size: int) -> Tuple[Tensor, Tensor]:
        gen = _generator(self.seed, step)
        half, pairs = self.vocab_size // 2, self.num_pairs
        keys = torch.rand(batch_size, half - 1, generator=gen).argsort(dim=1)[:, :pairs] + 1
        values = torch.randint(half, self.vocab_size, (batch_size, pairs), generator=gen)
        asked = torch.randint(0, pairs, (batch_size, self.seq_len - 2 * pairs), generator=gen)
        inputs = torch.cat([torch.stack([keys, values], dim=2).flatten(1), keys.gather(1, asked)], dim=1)
        targets = torch.full_like(inputs, IGNORE)
        targets[:, 2 * pairs :] = values.gather(1, asked)
        return inputs, targets


class TextLM:
    """Byte-level language modelling on a text: predict each next byte. The default corpus is the Python
    standard library's own source files, read from this installation (no download, nothing shipped)."""

    metric = "bits_per_byte"
    vocab_size = 256

    def __init__(self, text: Optional[bytes] = None, seq_len: int = 128, seed: int = 0) -> None:
        text = default_corpus() if text is None else text
        if len(text) <= seq_len + 1:
            raise ValueError(f"TextLM: the text has {len(text)} bytes, fewer than seq_len + 2 = {seq_len + 2}")
        self.data = torch.tensor(list(text), dtype=torch.long)
        self.seq_len, self.seed = seq_len, seed

    def batch(self, step: int, batch_size: int) -> Tuple[Tensor, Tensor]:
        gen = _generator(self.seed, step)
        starts = torch.randint(0, len(self.data) - self.seq_len - 1, (batch_size, 1), generator=gen)
        index = starts + torch.arange(self.seq_len)
        return self.data[index], self.data[index + 1]


def default_corpus(max_bytes: int = 2_000_000) -> bytes:
    """The first max_bytes of the standard library's top-level .py files, in name order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    chunks, size = [], 0
    for path in sorted(stdlib.glob("*.py")):
        data = path.read_bytes()
        chunks.append(data)
        size += len(data)
        if size >= max_bytes:
            break
    return b"".join(chunks)[:max_bytes]
