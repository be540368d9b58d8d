"""Where each method's parameters start: its authors' initialisation, on either backbone. docs/baselines.md cites
the lines of the authors' code each rule comes from.

- ``beit`` (SimMIM, ConMIM, DTM: BEiT's code): every Linear and Conv2d weight from a normal of std 0.02 truncated
  at one standard deviation (+-0.02; timm's ``trunc_normal_`` takes absolute bounds, so its default cut at +-2 is
  no cut at all), biases 0, LayerNorms 1 and 0; the class token and a learnt position embedding the same; each
  block's ``attn.proj`` and ``mlp.fc2`` weights divided by sqrt(2 x (block index + 1)); the relative position
  bias table at 0.
- ``xavier`` (MAE): every Linear xavier-uniform (the fused qkv as one matrix), biases 0, LayerNorms 1 and 0; the patch
  embedding xavier-uniform on its ``[D, C x p x p]`` view, its bias as PyTorch draws it; the class token normal
  with std 0.02.
- ``moco_v3`` (BootMAE, which follows MoCo v3): as ``xavier``, but the three parts of every fused qkv each
  xavier-uniform, the patch embedding's bias 0 and the class token normal with std 1e-6.

The relative position bias table, which MAE's and BootMAE's code does not have, starts at 0 as BEiT's.
"""

from __future__ import annotations

import math

import torch
from timm.layers import trunc_normal_
from torch import nn

SCHEMES = ("beit", "xavier", "moco_v3")
STD = 0.02  # BEiT's init_std, MAE's token std


@torch.no_grad()
def beit_normal_(t: torch.Tensor, std: float = STD) -> torch.Tensor:
    """BEiT's truncated normal: std ``std`` cut at +-``std`` (an actual spread of about 0.54 x ``std``)."""
    return trunc_normal_(t, std=std, a=-std, b=std)


@torch.no_grad()
def beit_layers_(module: nn.Module) -> None:
    """BEiT's ``_init_weights`` over ``module``: Linear and Conv2d weights ``beit_normal_``, biases 0, LayerNorms 1
    and 0 (BatchNorms keep PyTorch's 1 and 0)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            beit_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            _layer_norm_(m)


@torch.no_grad()
def xavier_layers_(module: nn.Module, split_qkv: bool = False) -> None:
    """MAE's ``_init_weights`` over ``module``: Linear weights xavier-uniform, biases 0, LayerNorms 1 and 0. With
    ``split_qkv`` (BootMAE, MoCo v3), a fused ``qkv`` Linear is three matrices, each xavier-uniform."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            if split_qkv and name.split(".")[-1] == "qkv":
                for part in m.weight.chunk(3, dim=0):
                    nn.init.xavier_uniform_(part)
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            _layer_norm_(m)


@torch.no_grad()
def init_encoder(encoder: nn.Module, scheme: str) -> None:
    """Initialise a timm ViT (``mto.methods.backbone.create_vit``) by ``scheme`` (one of ``SCHEMES``) in place."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown initialisation {scheme!r}: one of {', '.join(SCHEMES)}")
    proj = encoder.patch_embed.proj
    if scheme == "beit":
        beit_layers_(encoder)
        for i, block in enumerate(encoder.blocks):  # BEiT's fix_init_weight
            block.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))
        beit_normal_(encoder.cls_token)
    else:
        xavier_layers_(encoder, split_qkv=scheme == "moco_v3")
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        if scheme == "xavier":
            bound = 1 / math.sqrt(proj.weight[0].numel())  # PyTorch's Conv2d bias, which MAE leaves as drawn
            nn.init.uniform_(proj.bias, -bound, bound)
        else:
            nn.init.zeros_(proj.bias)
        nn.init.normal_(encoder.cls_token, std=STD if scheme == "xavier" else 1e-6)
    pos = getattr(encoder, "pos_embed", None)
    if pos is not None and pos.requires_grad:  # a learnt one (MAE's and BootMAE's models then fix it as sin-cos)
        beit_normal_(pos) if scheme == "beit" else nn.init.normal_(pos, std=STD)
    shared = getattr(encoder, "shared_rel_pos", None)
    if shared is not None:
        nn.init.zeros_(shared.relative_position_bias_table)


def _layer_norm_(m: nn.LayerNorm) -> None:
    if m.weight is not None:
        nn.init.ones_(m.weight)
    if m.bias is not None:
        nn.init.zeros_(m.bias)
