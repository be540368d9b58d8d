"""Optimiser parameter groups: weight decay as each method's authors group it.

Every authors' pre-training code builds its groups with the same rule (MAE: timm's ``add_weight_decay``;
SimMIM: ``get_pretrain_param_groups``; BootMAE, ConMIM, DTM: BEiT's ``get_parameter_groups``): no decay on
1-D parameters (norm gains, layer-scale gammas) and biases, nor on the names in the model's skip list; every
other trainable parameter decays. Their skip lists differ, so the mask token always decays, the class token
everywhere but in MAE is exempt, and a relative position bias table decays (docs/baselines.md).
"""

from __future__ import annotations

from typing import Any

from torch import nn


def decays(name: str, param: nn.Parameter, exempt: tuple[str, ...] = ()) -> bool:
    """True unless ``param`` is 1-D, a bias, or named in ``exempt`` (the method's skip list)."""
    return param.ndim > 1 and not name.endswith(".bias") and name not in exempt


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups of the trainable parameters: ``[{decayed, weight_decay}, {the rest, 0}]``, with the
    model's ``decay_exempt`` names as its skip list.

    Frozen parameters (momentum encoders, fixed position embeddings) are left out.
    """
    exempt = tuple(getattr(model, "decay_exempt", ()))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if decays(n, p, exempt)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if not decays(n, p, exempt)], "weight_decay": 0.0},
    ]
