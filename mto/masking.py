"""Which patches are hidden: MAE's random masking and SimMIM's block masking.

Both return a boolean mask ``[B, N]`` over the patch grid in raster order, True = masked,
with exactly the same number of masked patches in every sample (so per-sample token counts
agree and the tensors stay rectangular).
"""

from __future__ import annotations

import math

import torch


def num_masked(num_patches: int, ratio: float) -> int:
    """MAE keeps exactly ``int(N * (1 - ratio))`` patches; the rest are masked."""
    return num_patches - int(num_patches * (1 - ratio))


def random_masking(batch: int, num_patches: int, ratio: float, *, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """MAE random masking by sorting per-sample noise.

    Returns:
        mask: ``[B, N]`` bool, True where masked; ``num_masked(N, ratio)`` per row.
    """
    noise = torch.rand(batch, num_patches, generator=generator, device=device)
    rank = noise.argsort(dim=1).argsort(dim=1)  # rank of each patch's noise in its row
    return rank >= int(num_patches * (1 - ratio))


def block_masking(batch: int, grid: int, block: int, ratio: float, *, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """SimMIM masking: square blocks of ``block x block`` model patches are masked together.

    Args:
        grid: patches per side of the image (``image_size // patch_size``).
        block: model patches per side of one mask block (``mask_patch_size // patch_size``).
        ratio: share of blocks masked; ``ceil(blocks * ratio)`` of them, as in SimMIM.

    Returns:
        mask: ``[B, grid * grid]`` bool in raster order, True where masked.
    """
    if grid % block:
        raise ValueError(f"mask block of {block} patches must divide the {grid}x{grid} patch grid")
    side = grid // block
    count = min(side * side, math.ceil(side * side * ratio))
    noise = torch.rand(batch, side * side, generator=generator, device=device)
    blocks = noise.argsort(dim=1).argsort(dim=1) < count
    blocks = blocks.view(batch, side, 1, side, 1).expand(batch, side, block, side, block)
    return blocks.reshape(batch, grid * grid)


def masked_first_order(mask: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` token indices per sample with the masked tokens first (each group in raster order).

    Used to gather the masked/visible blocks in training and to order affinity maps for figures.
    """
    return torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)
