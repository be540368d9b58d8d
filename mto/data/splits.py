"""Seeded, stratified index sets: the validation split and every "first N" subset.

Data sets are often sorted by class (ImageFolder is), so "the first N" can hold a single class.
Every subset here is drawn instead: each class's items are shuffled with a seeded generator and
ranked by their position within their class relative to the class size, so any prefix of the
ranking holds the classes in proportion (every class, once N reaches the number of classes of a
balanced set). The same labels and seed always give the same indices.
"""

from __future__ import annotations

import torch

from mto.config import validation_size


def stratified_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A permutation of ``range(len(labels))`` whose every prefix is stratified by class.

    Args:
        labels: ``[N]`` integer class labels.
        seed: the generator's seed.
    """
    labels = labels.cpu()
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(labels.numel(), generator=g)
    shuffled = labels[perm]
    # rank of each item within its class (in shuffled order), then (rank + 1/2) / class size
    order = torch.argsort(shuffled, stable=True)
    counts = torch.bincount(shuffled)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel()) - starts[shuffled[order]]
    key = (rank.double() + 0.5) / counts[shuffled].double()
    return perm[torch.argsort(key, stable=True)]


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``n`` items (all when ``n`` >= the count), stratified by class and seeded."""
    if n >= labels.numel():
        return torch.arange(labels.numel())
    return torch.sort(stratified_order(labels, seed)[:n]).values


def split_off(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out) sorted index sets, disjoint and covering ``labels``; the held-out share is stratified."""
    order = stratified_order(labels, seed)
    k = validation_size(labels.numel(), fraction)
    return torch.sort(order[k:]).values, torch.sort(order[:k]).values
