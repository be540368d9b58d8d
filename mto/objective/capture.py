"""What a pass through a stack of ViT blocks kept for MTO: ``LayerCapture``, filled by the models' block
runner (``mto.methods.attention.run_blocks``) and read by ``plugin.MTOObjective``."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LayerCapture:
    """What a pass through the blocks kept. Layer 0 = the blocks' input (the initial embedding).

    ``tokens[l]``: ``[B, N, D]`` patch tokens (prefix tokens dropped) at layer ``l``.
    ``probs[l]``: ``[B, H, T, T]`` attention probabilities of block ``l`` (``l >= 1``).
    """

    tokens: dict[int, torch.Tensor] = field(default_factory=dict)
    probs: dict[int, torch.Tensor] = field(default_factory=dict)
