"""Settings several methods read, torch-free: SimMIM's block masking (SimMIM, ConMIM, DTM) and the momentum
encoder's rate (BootMAE, ConMIM, DTM). Each settings dataclass checks its own fields (``check``)."""

from __future__ import annotations

from dataclasses import dataclass

from mto.config.errors import check
from mto.config.limits import MAX_IMAGE_SIZE, bounded


@dataclass
class BlockMaskSettings:
    mask_patch_size: int | None = None  # SimMIM block size in pixels; None: 2 model patches

    def check(self) -> None:
        check(
            self.mask_patch_size is None or 1 <= self.mask_patch_size <= MAX_IMAGE_SIZE,
            "mim.mask_patch_size",
            self.mask_patch_size,
            f"{bounded(1, MAX_IMAGE_SIZE)} (pixels), or null",
        )


@dataclass
class MomentumSettings:
    # None: the method's published value (its registry entry's ``momentum``), docs/baselines.md
    momentum: float | None = None  # EMA rate at the start
    momentum_end: float | None = None  # EMA rate at the end (ConMIM/DTM: per-step cosine; BootMAE: linear ramp)

    def check(self) -> None:
        start, end = self.momentum_range  # type: ignore[attr-defined]  (MIMConfig's)
        check(0 <= start < 1, "mim.momentum", self.momentum, "a number in [0, 1) or null")
        check(
            start <= end <= 1, "mim.momentum_end", self.momentum_end, f"a number in [mim.momentum={start}, 1] or null"
        )
