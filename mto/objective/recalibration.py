"""Weight recalibration: keep masked tokens out of the visible tokens' attention.

``soft`` penalises the attention mass that visible queries put on masked keys (``L_spa`` in
``mto.objective.losses``); ``hard`` removes those weights with an attention mask, which keeps the fused
attention kernels usable.
"""

from __future__ import annotations

import torch


def hard_attention_mask(mask: torch.Tensor, num_prefix: int = 0) -> torch.Tensor:
    """Boolean attention mask (True = may attend) that hides masked keys from visible queries.

    Masked queries still see every key. Prefix tokens (class/register) count as visible.

    Args:
        mask: ``[B, N]`` bool over patches, True = masked.
        num_prefix: prefix tokens in front of the patches.
    Returns:
        ``[B, 1, T, T]`` with ``T = num_prefix + N``, broadcast over heads.
    """
    b = mask.shape[0]
    masked = torch.cat([mask.new_zeros(b, num_prefix), mask], dim=1)  # [B, T]
    blocked = (~masked)[:, :, None] & masked[:, None, :]  # visible query -> masked key
    return (~blocked)[:, None]


def visible_to_masked_mass(probs: torch.Tensor, mask: torch.Tensor, num_prefix: int = 0) -> torch.Tensor:
    """``mean_{i in V} sum_{j in M} P_ij``: attention mass visible patch queries put on masked keys.

    Args:
        probs: ``[..., B, T, T]`` head-averaged attention probabilities (any leading axes, e.g. layers).
        mask: ``[B, N]`` bool over patches, True = masked.
        num_prefix: prefix tokens in front of the patches.
    Returns:
        ``[...]``: averaged over visible queries and the batch.
    """
    patch = probs.float()[..., num_prefix:, num_prefix:]
    mass = (patch * mask[:, None, :].float()).sum(dim=-1)  # [..., B, N]: each query's mass on masked keys
    visible = (~mask).float()
    return ((mass * visible).sum(dim=-1) / visible.sum(dim=-1).clamp_min(1.0)).mean(dim=-1)
