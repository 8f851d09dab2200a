"""The attention kinds, by the one name used everywhere: modules, swap helper, trainer flags, reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .. import reference
from ..functional import attention, linear_attention


@dataclass(frozen=True)
class AttentionKind:
    name: str
    activation: Optional[str] = None  # quadratic kinds: the score activation
    feature_map: Optional[str] = None  # linear kinds: the feature map
    normalize: bool = True  # linear kinds: divide by phi(q) . sum phi(k)

    @property
    def is_linear(self) -> bool:
        return self.feature_map is not None

    def __call__(
        self, q: Tensor, k: Tensor, v: Tensor, causal: bool, key_lengths: Optional[Tensor], dropout_p: float = 0.0
    ) -> Tensor:
        """(B, H, Nq, D) attention output of this kind; ``dropout_p``: attention dropout (quadratic kinds)."""
        if self.is_linear:
            if dropout_p > 0:
                raise NotImplementedError(
                    f"actattn: attention dropout (dropout_p={dropout_p}) needs the attention weights, which "
                    f"linear attention ({self.name}) never forms: phi(Q) (phi(K)^T V) sums over keys before any "
                    "query meets them. Use dropout=0.0 (dropout elsewhere in the model still works)"
                )
            return linear_attention(
                q, k, v, feature_map=self.feature_map, causal=causal, normalize=self.normalize,
                key_lengths=key_lengths,
            )
        return attention(
            q, k, v, activation=self.activation, causal=causal, key_lengths=key_lengths, dropout_p=dropout_p
        )

    def weights(self, q: Tensor, k: Tensor, causal: bool, key_lengths: Optional[Tensor]) -> Tensor:
        """(B, H, Nq, Nk) attention weights this kind applies to v (materialised; for inspection)."""
        eye = torch.eye(k.shape[-2], dtype=q.dtype, device=q.device).expand(*k.shape[:2], -1, -1)
        # The weights are the output for v = identity: the reference applies exactly the kernels' math.
        if self.is_linear:
            out, _ = reference.linear_attention(
                q, k, eye, self.feature_map, causal, self.normalize, key_lengths=key_lengths
            )
            return out
        return reference.attention(q, k, eye, self.activation, causal, key_lengths=key_lengths)


# identity has no positivity: its normaliser can cross zero, so its linear kind is unnormalised.
KINDS = {
    kind.name: kind
    for kind in (
        AttentionKind("softmax", activation="softmax"),
        AttentionKind("sigmoid", activation="sigmoid"),
        AttentionKind("relu", activation="relu"),
        AttentionKind("linear-identity", feature_map="identity", normalize=False),
        AttentionKind("linear-relu", feature_map="relu"),
        AttentionKind("linear-elu", feature_map="elu"),
    )
}


def get_kind(name: str) -> AttentionKind:
    if name not in KINDS:
        raise ValueError(f"actattn: attention must be one of {', '.join(map(repr, KINDS))}; got {name!r}")
    return KINDS[name]
