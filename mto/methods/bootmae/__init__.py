"""BootMAE (Dong et al., ECCV 2022): MAE plus a momentum encoder's features as a second target."""

from __future__ import annotations

from dataclasses import dataclass

from mto.config.errors import check
from mto.config.limits import MAX_EPOCHS
from mto.methods.mae import FAMILY_OPTIONS, MAEFamilySettings
from mto.methods.registry import Method, register
from mto.methods.shared import MomentumSettings


@dataclass
class BootMAESettings:
    momentum_ramp_epochs: float | None = None  # momentum's linear ramp; None: train.epochs / 8 (100 of 800)
    feature_weight: float = 1.0  # weight of the feature-regression target
    feature_weight_ramp_epochs: float | None = None  # its linear ramp; None: train.epochs / 4; 0: none
    context_blocks: list[int] | None = None  # encoder blocks (0-based) the [pixel, feature] decoders
    #   cross-attend to; None: [0, depth - 1] (the authors' fea_list=[0, 11] of 12)

    def check(self) -> None:
        for name in ("momentum_ramp_epochs", "feature_weight_ramp_epochs"):
            v = getattr(self, name)
            allowed = f"a number of epochs from 0 to {MAX_EPOCHS:,}, or null"
            check(v is None or 0 <= v <= MAX_EPOCHS, f"mim.{name}", v, allowed)
        check(self.feature_weight >= 0, "mim.feature_weight", self.feature_weight, "a number >= 0")
        cb = self.context_blocks
        check(
            cb is None or (len(cb) == 2 and all(isinstance(b, int) and b >= 0 for b in cb)),
            "mim.context_blocks",
            cb,
            "two encoder block indices >= 0 [pixel decoder, feature decoder], or null",
        )


register(
    Method(
        "bootmae",
        "mto.methods.bootmae.model:BootMAE",
        mto_on="decoder",
        masking="random",
        summary="BootMAE (Dong et al., ECCV 2022)",
        momentum=(0.999, 0.9999),  # LightDXY/BootMAE run script
        settings=(MAEFamilySettings, MomentumSettings, BootMAESettings),
        defaults=dict.fromkeys(FAMILY_OPTIONS, True),
    )
)
