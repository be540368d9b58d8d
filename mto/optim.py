"""Optimiser parameter groups: weight decay only on the weight matrices.

As in MAE (``optim_factory.param_groups_weight_decay`` of timm), SimMIM and the BEiT family:
biases, normalisation gains, class/register/mask tokens and position embeddings are exempt.
"""

from __future__ import annotations

from typing import Any

from torch import nn

# Multi-dimensional parameters that are embeddings, not weights (timm's ViT ``no_weight_decay``
# names, plus the MIM models' mask tokens).
NO_DECAY_SUFFIXES = ("pos_embed", "cls_token", "reg_token", "dist_token", "mask_token")


def decays(name: str, param: nn.Parameter) -> bool:
    """True for a weight matrix or kernel: ``ndim >= 2`` and not a token or position embedding."""
    return param.ndim >= 2 and not name.rsplit(".", 1)[-1].endswith(NO_DECAY_SUFFIXES)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups of the trainable parameters: ``[{decayed, weight_decay}, {the rest, 0}]``.

    Frozen parameters (momentum encoders, fixed position embeddings) are left out.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if decays(n, p)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0}]
