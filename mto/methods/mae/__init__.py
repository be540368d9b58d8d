"""MAE (He et al., CVPR 2022): the encoder sees visible patches only, mask tokens enter the decoder."""

from __future__ import annotations

from dataclasses import dataclass

from mto.config.errors import check
from mto.config.limits import MAX_DEPTH, MAX_WIDTH, bounded
from mto.methods.registry import Method, register

FAMILY_OPTIONS = ("block_masking", "pos_embed_mask_only", "norm_pix_per_channel", "weight_mask")


@dataclass
class MAEFamilySettings:
    """What MAE and BootMAE share: the decoder, the pixel target and four options whose null means the
    method's authors' value (off in MAE's code, on in BootMAE's)."""

    norm_pix_loss: bool = True  # regress per-patch normalised pixels
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 4
    block_masking: bool | None = None  # BEiT block masking (120/196 of the patches, in blocks of 16-60 of 196),
    #   topped up at random to mask_ratio and rolled by 0-3 patches; off: uniform random masking
    pos_embed_mask_only: bool | None = None  # the decoders add their position embedding to mask tokens only
    norm_pix_per_channel: bool | None = None  # norm_pix_loss per patch and channel (else per patch, MAE)
    weight_mask: bool | None = None  # pixel loss weighted up at masked patches beside masked patches

    def check(self) -> None:
        for name, most in (("decoder_dim", MAX_WIDTH), ("decoder_depth", MAX_DEPTH), ("decoder_heads", MAX_WIDTH)):
            check(1 <= getattr(self, name) <= most, f"mim.{name}", getattr(self, name), bounded(1, most))


register(
    Method(
        "mae",
        "mto.methods.mae.model:MAE",
        mto_on="decoder",
        masking="random",
        fusable=True,
        summary="MAE (He et al., CVPR 2022)",
        settings=(MAEFamilySettings,),
        defaults=dict.fromkeys(FAMILY_OPTIONS, False),
    )
)
