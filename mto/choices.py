"""The named choices a trial config offers, defined once (config validates against them,
the model and method modules build from them)."""

from __future__ import annotations

# model.preset -> (timm model name, embed_dim, depth, num_heads). "tiny" is our CPU size
# (docs/method.md, "Scale").
PRESETS: dict[str, tuple[str, int, int, int]] = {
    "tiny": ("vit_tiny_patch16_224", 64, 4, 4),
    "vit_tiny": ("vit_tiny_patch16_224", 192, 12, 3),
    "vit_small": ("vit_small_patch16_224", 384, 12, 6),
    "vit_base": ("vit_base_patch16_224", 768, 12, 12),
}
# mim.method: the MIM methods MTO plugs into (mto.methods maps each to its class).
METHODS = ("simmim", "mae", "bootmae", "conmim")
# MTO acts on the decoder for these (their encoder never sees a mask token).
DECODER_METHODS = ("mae", "bootmae")
DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")
AFFINITIES = ("cosine", "attention")
RECALIBRATIONS = ("none", "soft", "hard")
LAMBDA_SCHEDULES = ("constant", "linear_warmup", "cosine_decay")


def preset_depth(preset: str) -> int:
    """The number of blocks of a model preset."""
    return PRESETS[preset][2]
