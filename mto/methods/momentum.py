"""Momentum (EMA) encoders and their schedules, as BootMAE, ConMIM and DTM use for their targets.

The schedules are the authors' (read in LightDXY/BootMAE ``utils.adjust_ema_momentum`` and
TencentARC/ConMIM ``utils.cosine_scheduler``), written as pure functions of training progress.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module``: no gradients ever reach it; only ``ema_update`` changes it."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float | torch.Tensor) -> None:
    """``target <- momentum * target + (1 - momentum) * online``, parameter by parameter (buffers copied);
    ``momentum`` a number or a 0-d tensor on the parameters' device (in a training step)."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o.detach(), 1.0 - momentum)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)


def cosine_momentum(step: int, total_steps: int | None, start: float, end: float) -> float:
    """ConMIM's (and BYOL's) per-step cosine rise ``end - (end - start) * (1 + cos(pi t / T)) / 2``.

    Args:
        step: optimiser steps done, ``t``; total_steps: ``T`` (None: not known, the start value).
    """
    if not total_steps:
        return start
    t = min(step, total_steps) / total_steps
    return end - (end - start) * (1 + math.cos(math.pi * t)) / 2


def linear_ramp_momentum(epoch: int, ramp_epochs: float, start: float, end: float) -> float:
    """BootMAE's per-epoch linear rise from ``start`` to ``end`` over ``ramp_epochs``, then held.

    The authors ramp 0.999 -> 0.9999 over the first 100 of 800 epochs (and, with
    ``--model_ema_dynamic``, on to 0.99999 by epoch 400: that second phase is not modelled).

    Args:
        epoch: completed epochs (an integer: the authors set the rate once per epoch).
    """
    if ramp_epochs <= 0 or epoch >= ramp_epochs:
        return end
    return start + epoch / ramp_epochs * (end - start)


def linear_weight_ramp(epoch: int, ramp_epochs: float, weight: float) -> float:
    """BootMAE's feature-loss weight ``weight * min((1 + epoch) / ramp_epochs, 1)``.

    The authors ramp over the first quarter of training (``min(4 (1 + epoch) / epochs, 1)``).
    """
    if ramp_epochs <= 0:
        return weight
    return weight * min((1 + epoch) / ramp_epochs, 1.0)
