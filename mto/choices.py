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
METHODS = ("simmim", "mae", "bootmae", "conmim", "dtm")
# MTO acts on the decoder for these (their encoder never sees a mask token).
DECODER_METHODS = ("mae", "bootmae")
# SimMIM's block masking, mask tokens in the encoder (mim.mask_patch_size applies).
BLOCK_MASK_METHODS = ("simmim", "conmim", "dtm")
# mim.method -> (momentum at the start, at the end) of its momentum encoder, the authors' values
# (BootMAE: LightDXY/BootMAE run script; ConMIM: TencentARC/ConMIM --t_momentum, rising to 1; DTM:
# its EMA teacher is ours, ConMIM's schedule). mim.momentum / mim.momentum_end override them.
MOMENTUM_DEFAULTS: dict[str, tuple[float, float]] = {"bootmae": (0.999, 0.9999), "conmim": (0.996, 1.0),
                                                      "dtm": (0.996, 1.0)}
# model.pos_embed: the encoder's position information (mto.backbone).
POS_EMBEDS = ("abs", "rel_bias", "none")
DATASETS = ("digits", "cifar10", "cifar100", "imagefolder", "synthetic")
AFFINITIES = ("cosine", "attention")
RECALIBRATIONS = ("none", "soft", "hard")
LAMBDA_SCHEDULES = ("constant", "linear_warmup", "cosine_decay")


def preset_depth(preset: str) -> int:
    """The number of blocks of a model preset."""
    return PRESETS[preset][2]
