"""Which patches are hidden: MAE's random masking, SimMIM's block masking and BootMAE's BEiT block
masking with its top-up and roll.

Both return a boolean mask ``[B, N]`` over the patch grid in raster order, True = masked,
with exactly the same number of masked patches in every sample (so per-sample token counts
agree and the tensors stay rectangular).
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch


def num_masked(num_patches: int, ratio: float) -> int:
    """MAE keeps exactly ``int(N * (1 - ratio))`` patches; the rest are masked."""
    return num_patches - int(num_patches * (1 - ratio))


def random_masking(
    batch: int,
    num_patches: int,
    ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """MAE random masking by sorting per-sample noise.

    Returns:
        mask: ``[B, N]`` bool, True where masked; ``num_masked(N, ratio)`` per row.
    """
    noise = torch.rand(batch, num_patches, generator=generator, device=device)
    rank = noise.argsort(dim=1).argsort(dim=1)  # rank of each patch's noise in its row
    return rank >= int(num_patches * (1 - ratio))


def block_masking(
    batch: int,
    grid: int,
    block: int,
    ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
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


# BEiT's generator as BootMAE's run_pretraining.py configures it for 196 patches: 120 patches in blocks of
# 16 to 60, aspect ratio log-uniform in (0.3, 1 / 0.3); then its utils.mask_to_index rolls the patch order
# by 0 to 3. Scaled to other grids by N / 196.
BEIT_PATCHES, BEIT_MIN_BLOCK, BEIT_MAX_BLOCK, BEIT_MAX_ROLL, BEIT_GRID_PATCHES = 120, 16, 60, 3, 196
BEIT_LOG_ASPECT = (math.log(0.3), math.log(1 / 0.3))
MAX_ATTEMPTS = 10_000  # BootMAE retries a block until it adds patches; a guard against an endless loop


def beit_blocks(grid: int, count: int, min_block: int, max_block: int, rng: random.Random) -> np.ndarray:
    """BEiT's block mask generator as BootMAE runs it (retrying until a block adds patches): rectangles of
    ``min_block`` to ``max_block`` patches, each adding at most what is left, until ``count`` are masked.

    Returns:
        ``[grid, grid]`` bool, True = in a block (a numpy array: an epoch draws one mask per image on the host,
        and numpy's small slices make that about 2.5x faster than torch's, with the same masks).
    """
    mask = np.zeros((grid, grid), dtype=bool)
    done = 0
    while done < count:
        most = min(count - done, max_block)
        for _ in range(MAX_ATTEMPTS):
            area = rng.uniform(min_block, most)
            aspect = math.exp(rng.uniform(*BEIT_LOG_ASPECT))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if w < grid and h < grid:
                top, left = rng.randint(0, grid - h), rng.randint(0, grid - w)
                new = h * w - int(mask[top : top + h, left : left + w].sum())
                if 0 < new <= most:
                    mask[top : top + h, left : left + w] = True
                    done += new
                    break
        else:
            break  # no block fits (tiny grids); the top-up below masks the rest
    return mask


def beit_block_masking(
    batch: int,
    grid: int,
    num_masked: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """BootMAE's masking: BEiT blocks covering ``120 / 196`` of the patches (``beit_blocks``), then
    ``topped_up_and_rolled``. Exactly ``num_masked`` patches per row; the prefix tokens are never masked.
    Python's ``random`` draws the blocks, seeded from ``generator``.

    Returns:
        mask: ``[B, grid * grid]`` bool in raster order, True where masked.
    """
    n = grid * grid
    scale = n / BEIT_GRID_PATCHES
    count = min(n, round(BEIT_PATCHES * scale))
    min_block, max_block = max(1, round(BEIT_MIN_BLOCK * scale)), max(1, round(BEIT_MAX_BLOCK * scale))
    rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
    blocks = torch.from_numpy(
        np.stack([beit_blocks(grid, count, min_block, max_block, rng).ravel() for _ in range(batch)])
    )
    return topped_up_and_rolled(blocks, num_masked, round(BEIT_MAX_ROLL * scale), generator).to(device)


def topped_up_and_rolled(
    blocks: torch.Tensor, num_masked: int, max_roll: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """BootMAE's ``mask_to_index``: the patch order with the non-block patches first and the block patches
    last (each group in random order), rolled by ``k`` in 0..``max_roll`` (so ``k`` block patches wrap to the
    front), and the first ``N - num_masked`` kept visible. The roll is drawn per image (the authors draw one
    per batch).

    Args:
        blocks: ``[B, N]`` bool, True = in a block.
    Returns:
        ``[B, N]`` bool mask, ``num_masked`` per row.
    """
    b, n = blocks.shape
    noise = torch.rand(b, n, generator=generator)
    order = torch.where(blocks, 1 - noise, -noise).argsort(dim=1)  # the authors' argsort(1 - (1 - mask + noise))
    roll = torch.randint(0, max_roll + 1, (b, 1), generator=generator)
    order = order.gather(1, (torch.arange(n) - roll) % n)  # order.roll(k) per row
    return torch.ones(b, n, dtype=torch.bool).scatter(1, order[:, : n - num_masked], False)
