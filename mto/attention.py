"""Running timm ViT blocks while keeping what MTO needs: per-layer tokens and attention maps.

timm's ``Attention`` uses ``scaled_dot_product_attention`` and never materialises the
attention probabilities. For the blocks whose probabilities a loss needs, ``block_forward``
runs the same computation explicitly; every other block runs timm's own (fused) forward.
A test checks that both paths agree, so a change in timm cannot slip by unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from timm.layers import Attention
from timm.models.vision_transformer import Block
from torch import nn


def check_supported(blocks: nn.ModuleList) -> None:
    """Raise TypeError unless every block is timm's standard pre-norm ``Block`` with ``Attention``."""
    for i, blk in enumerate(blocks):
        if type(blk) is not Block or type(blk.attn) is not Attention:
            raise TypeError(f"block {i} is {type(blk).__name__}/{type(getattr(blk, 'attn', None)).__name__}; "
                            "MTO needs timm's Block with Attention")


def block_forward(blk: Block, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """timm ``Block.forward`` with the attention computed explicitly.

    Args:
        x: ``[B, T, D]`` tokens.
        attn_mask: optional ``[B, 1, T, T]`` bool, True = may attend.
    Returns:
        the block output ``[B, T, D]`` and the attention probabilities ``[B, H, T, T]``.
    """
    attn = blk.attn
    h = blk.norm1(x)
    b, t, _ = h.shape
    gate = attn.gate(h).sigmoid() if attn.gate is not None else None
    q, k, v = attn.qkv(h).reshape(b, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float("-inf"))
    probs = logits.softmax(dim=-1)
    out = (attn.attn_drop(probs) @ v).transpose(1, 2).reshape(b, t, attn.attn_dim)
    out = attn.norm(out)
    if gate is not None:
        out = out * gate
    out = attn.proj_drop(attn.proj(out))
    x = x + blk.drop_path1(blk.ls1(out))
    x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    return x, probs


@dataclass
class LayerCapture:
    """What a pass through the blocks kept. Layer 0 = the blocks' input (the initial embedding).

    ``tokens[l]``: ``[B, N, D]`` patch tokens (prefix tokens dropped) at layer ``l``.
    ``probs[l]``: ``[B, H, T, T]`` attention probabilities of block ``l`` (``l >= 1``).
    """

    tokens: dict[int, torch.Tensor] = field(default_factory=dict)
    probs: dict[int, torch.Tensor] = field(default_factory=dict)


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, *, num_prefix: int, attn_mask: torch.Tensor | None = None,
               token_layers: frozenset[int] = frozenset(), prob_layers: frozenset[int] = frozenset(),
               cross: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None) -> tuple[torch.Tensor, LayerCapture]:
    """Run ``blocks`` over ``x`` ``[B, T, D]``, capturing tokens/probabilities of the requested layers.

    ``cross``, when given, holds one callable per block whose output ``[B, T, D]`` is added to the
    block's input (BootMAE's cross-attention feature injection into every decoder block).
    """
    capture = LayerCapture()
    if 0 in token_layers:
        capture.tokens[0] = x[:, num_prefix:]
    for l, blk in enumerate(blocks, start=1):
        if cross is not None:
            x = x + cross[l - 1](x)
        if l in prob_layers:
            x, capture.probs[l] = block_forward(blk, x, attn_mask)
        else:
            x = blk(x, attn_mask=attn_mask)
        if l in token_layers:
            capture.tokens[l] = x[:, num_prefix:]
    return x, capture
