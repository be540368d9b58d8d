"""ConMIM (Yi et al., ICLR 2023): masked image modeling as denoising contrast against a momentum encoder."""

from __future__ import annotations

from dataclasses import dataclass, field

from mto.config.errors import check
from mto.config.limits import MAX_DEPTH, MAX_WIDTH, bounded
from mto.methods.registry import Method, register
from mto.methods.shared import BlockMaskSettings, MomentumSettings


@dataclass
class ConMIMSettings:
    contrast_temperature: float = 0.1  # InfoNCE temperature
    projector_depth: int = 3  # layers of the MLP projector (Linear-BN-ReLU ..., last BN without affine)
    projector_hidden_dim: int | None = None  # None: 4 x the encoder width (authors: 4096 for 768)
    projector_dim: int | None = None  # None: the encoder width (authors: 256)
    # strong augmentation of the momentum branch's full view (the online view gets only the shared crop/flip):
    # colour jitter (brightness, contrast, saturation, hue), grayscale, blur, solarisation, each with its probability
    strong_jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.2, 0.1])
    strong_jitter_prob: float = 0.8
    strong_gray_prob: float = 0.2
    strong_blur_prob: float = 0.1
    strong_solarize_prob: float = 0.2

    def check(self) -> None:
        check(self.contrast_temperature > 0, "mim.contrast_temperature", self.contrast_temperature, "a number > 0")
        check(
            1 <= self.projector_depth <= MAX_DEPTH, "mim.projector_depth", self.projector_depth, bounded(1, MAX_DEPTH)
        )
        for name in ("projector_hidden_dim", "projector_dim"):
            v = getattr(self, name)
            check(v is None or 1 <= v <= MAX_WIDTH, f"mim.{name}", v, f"{bounded(1, MAX_WIDTH)}, or null")
        j = self.strong_jitter
        check(
            len(j) == 4 and all(v >= 0 for v in j) and j[3] <= 0.5,
            "mim.strong_jitter",
            j,
            "[brightness, contrast, saturation, hue], each >= 0, hue <= 0.5",
        )
        for name in ("strong_jitter_prob", "strong_gray_prob", "strong_blur_prob", "strong_solarize_prob"):
            check(0 <= getattr(self, name) <= 1, f"mim.{name}", getattr(self, name), "a probability in [0, 1]")


register(
    Method(
        "conmim",
        "mto.methods.conmim.model:ConMIM",
        mto_on="encoder",
        masking="block",
        summary="ConMIM (Yi et al., ICLR 2023)",
        momentum=(0.996, 1.0),  # --t_momentum, rising to 1
        settings=(BlockMaskSettings, MomentumSettings, ConMIMSettings),
    )
)
