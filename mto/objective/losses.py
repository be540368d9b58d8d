"""The three MTO losses as pure functions of per-layer values (docs/method.md).

Each takes the per-layer quantity and the layer weights ``w_l`` from ``mto.config.depth``;
layers with weight 0 do not contribute, and all-zero weights give a zero loss.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    """``L_r = sum_p v_p relu(h^{l'} - h^l + margin) / sum_p v_p`` over pairs ``p`` of consecutive covered layers.

    "Covered" are the layers with positive weight; heterogeneity should fall with depth, so a later
    layer more heterogeneous than the one before it is penalised. Our choices: the pairs are
    consecutive among covered layers (so ``early:k`` ranks layers 0..k-1), and a pair weighs the
    mean of its two layers' weights, ``v_p = (w_l + w_l') / 2``, so weight-valued schedules
    (``linear``, ``exp:g``, a list of weights) shape the loss; ``all`` and index lists weigh every
    pair alike (the plain mean). A layer of weight 0 is not covered (``linear`` gives layer L 0).
    """
    covered = [l for l, w in enumerate(weights) if w > 0]
    pairs = list(zip(covered, covered[1:]))
    if not pairs:
        return torch.zeros(())
    v = [(weights[a] + weights[b]) / 2 for a, b in pairs]  # Python numbers: no tensor made on the host per step
    return sum(torch.relu(h[b] - h[a] + margin) * w for (a, b), w in zip(pairs, v)) / sum(v)


def spa_loss(mass: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``L_spa = sum_l w_l a^l / sum_l w_l`` with ``a^l`` the visible-to-masked attention mass of block ``l``.

    ``mass[0]`` belongs to the initial embedding, which has no attention; its weight is ignored.
    """
    return _weighted_mean(list(mass)[1:], list(weights)[1:])
