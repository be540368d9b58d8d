"""The three MTO losses as pure functions of per-layer values (docs/method.md).

Each takes the per-layer quantity and the layer weights ``w_l`` from ``mto.schedules``;
layers with weight 0 do not contribute, and all-zero weights give a zero loss.
"""

from __future__ import annotations

from typing import Sequence

import torch


def _weighted_mean(values: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    pairs = [(v, w) for v, w in zip(values, weights) if w > 0]
    if not pairs:
        return torch.zeros(())
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total


def entropy_loss(h: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``L_e = -sum_l w_l h^l / sum_l w_l``: maximise heterogeneity where the weights are."""
    return -_weighted_mean(h, weights)


def rank_loss(h: Sequence[torch.Tensor], weights: Sequence[float], margin: float = 0.0) -> torch.Tensor:
    """``L_r = mean relu(h^{l'} - h^l + margin)`` over consecutive covered layers ``l < l'``.

    "Covered" are the layers with positive weight; heterogeneity should fall with depth,
    so a later layer more heterogeneous than the one before it is penalised. Our choice: the
    pairs are consecutive among covered layers (so ``early:k`` ranks layers 0..k-1).
    """
    covered = [l for l, w in enumerate(weights) if w > 0]
    terms = [torch.relu(h[b] - h[a] + margin) for a, b in zip(covered, covered[1:])]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).mean()


def spa_loss(mass: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``L_spa = sum_l w_l a^l / sum_l w_l`` with ``a^l`` the visible-to-masked attention mass of block ``l``.

    ``mass[0]`` belongs to the initial embedding, which has no attention; its weight is ignored.
    """
    return _weighted_mean(list(mass)[1:], list(weights)[1:])
