"""The encoder: a timm Vision Transformer with the position handling ``model.pos_embed`` names.

- ``abs``: timm's ``VisionTransformer`` with its learnable absolute position embedding (MAE and BootMAE
  replace it with their fixed 2-D sin-cos one);
- ``rel_bias``: timm's ``VisionTransformerRelPos`` with no absolute embedding and one BEiT-style relative
  position bias table (class-token entries included) shared by all blocks: the backbone of SimMIM's,
  ConMIM's and DTM's authors (with ``model.layer_scale: 0.1``);
- ``none``: timm's ``VisionTransformer`` without any position embedding.

The methods reach the encoder's tokens through the functions here, so every method runs on every kind.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_relpos import VisionTransformerRelPos

from mto.config import ModelConfig
from mto.config.choices import PRESETS
from mto.methods.attention import call_block, check_supported

Encoder = VisionTransformer | VisionTransformerRelPos


# model.pos_embed rel_bias: timm registers no model of exactly this backbone (one BEiT-style relative position bias
# table, with class-token entries, shared by all blocks); it is timm's VisionTransformerRelPos, reached through this
# registered name with every architectural argument given, so ``timm.create_model`` rebuilds it from those arguments
REL_BIAS_ARCHITECTURE = "vit_relpos_base_patch16_cls_224"


def timm_architecture(cfg: ModelConfig, *, img_size: int, in_chans: int) -> tuple[str, dict[str, Any]]:
    """The registered timm model name and the keyword arguments that build the encoder (without its head and
    drop-path): ``timm.create_model(name, **kwargs)`` is the encoder, here and wherever its weights go.

    Pooling is timm's ``avg`` without ``fc_norm``: the mean of the normed last block's patch tokens, the probes'
    very features (``mto.methods.base.encode_patches``); it changes no module of the encoder."""
    name, dim, depth, heads = PRESETS[cfg.preset]
    args: dict[str, Any] = dict(
        img_size=img_size,
        patch_size=cfg.patch_size,
        in_chans=in_chans,
        embed_dim=cfg.embed_dim or dim,
        depth=cfg.depth or depth,
        num_heads=cfg.num_heads or heads,
        init_values=cfg.layer_scale,
        global_pool="avg",
        fc_norm=False,
    )
    if cfg.pos_embed == "rel_bias":
        return REL_BIAS_ARCHITECTURE, {
            **args,
            "qkv_bias": True,
            "class_token": True,
            "rel_pos_type": "bias",
            "shared_rel_pos": True,
        }
    return name, {**args, "pos_embed": "learn" if cfg.pos_embed == "abs" else "none"}


def create_vit(cfg: ModelConfig, *, img_size: int, in_chans: int, num_classes: int = 0) -> Encoder:
    """A randomly initialised timm ViT for the preset, sizes and position handling (``timm_architecture``): no
    head, or (``num_classes``) a linear head on the mean-pooled patch tokens of the normed last block (the probes'
    features, which the headless encoder returns as its output).

    Nothing is downloaded: ``pretrained=False`` always.
    """
    name, args = timm_architecture(cfg, img_size=img_size, in_chans=in_chans)
    dim, heads = args["embed_dim"], args["num_heads"]
    if dim % heads:
        raise ValueError(f"model.embed_dim={dim} must be divisible by model.num_heads={heads}")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, drop_path_rate=cfg.drop_path, **args)
    check_supported(model.blocks)
    return model


def embed_tokens(enc: Encoder, patches: torch.Tensor) -> torch.Tensor:
    """Patch embeddings ``[B, N, D]`` -> the blocks' input ``[B, prefix + N, D]``: prefix tokens prepended and
    the absolute position embedding added (when the encoder has one)."""
    if isinstance(enc, VisionTransformerRelPos):
        return torch.cat([enc.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
    return enc.norm_pre(enc.patch_drop(enc._pos_embed(patches)))


def position_bias(enc: Encoder) -> torch.Tensor | None:
    """The shared relative position bias ``[1, H, T, T]`` every block adds to its attention logits, or None."""
    return enc.shared_rel_pos.get_bias() if isinstance(enc, VisionTransformerRelPos) else None


def visible_bias(bias: torch.Tensor, keep: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """The bias between the tokens an encoder keeps (prefix tokens, then the patches ``keep`` ``[B, K]``):
    ``[B, H, prefix + K, prefix + K]`` from the full ``[1, H, T, T]``."""
    b, heads, size = keep.shape[0], bias.shape[1], bias.shape[-1]
    prefix = torch.arange(num_prefix, device=keep.device).expand(b, -1)
    idx = torch.cat([prefix, keep + num_prefix], dim=1)  # [B, T']
    rows = bias.expand(b, -1, -1, -1).gather(2, idx[:, None, :, None].expand(-1, heads, -1, size))
    return rows.gather(3, idx[:, None, None, :].expand(-1, heads, idx.shape[1], -1))


def run_encoder(
    enc: Encoder, x: torch.Tensor, bias: torch.Tensor | None, outputs: dict[int, torch.Tensor] | None = None
) -> torch.Tensor:
    """The encoder's blocks over ``x`` (before the final norm). ``outputs``, when given, is filled with the output
    of each block index it holds as a key."""
    for i, blk in enumerate(enc.blocks):
        x = call_block(blk, x, bias)
        if outputs is not None and i in outputs:
            outputs[i] = x
    return x


def pre_norm(enc: Encoder, x: torch.Tensor) -> torch.Tensor:
    """The norm timm applies before the blocks (identity unless the model was built with one)."""
    return enc.norm_pre(x) if hasattr(enc, "norm_pre") else x
