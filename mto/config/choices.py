"""The named choices a trial config offers, defined once (config validates against them,
the model and method modules build from them). The methods are named by ``mto.methods.registry``."""

from __future__ import annotations

# model.preset -> (timm model name, embed_dim, depth, num_heads). "tiny" is our CPU size
# (docs/method.md, "Scale").
PRESETS: dict[str, tuple[str, int, int, int]] = {
    "tiny": ("vit_tiny_patch16_224", 64, 4, 4),
    "vit_tiny": ("vit_tiny_patch16_224", 192, 12, 3),
    "vit_small": ("vit_small_patch16_224", 384, 12, 6),
    "vit_base": ("vit_base_patch16_224", 768, 12, 12),
}
# model.pos_embed: the encoder's position information (mto.methods.backbone).
POS_EMBEDS = ("abs", "rel_bias", "none")
DATASETS = ("digits", "cifar10", "cifar100", "imagefolder", "synthetic")
AFFINITIES = ("cosine", "attention")
RECALIBRATIONS = ("none", "soft", "hard")
LAMBDA_SCHEDULES = ("constant", "linear_warmup", "cosine_decay")


def preset_depth(preset: str) -> int:
    """The number of blocks of a model preset."""
    return PRESETS[preset][2]
