"""Running timm ViT blocks while keeping what MTO needs: per-layer tokens and attention maps.

timm's ``Attention`` uses ``scaled_dot_product_attention`` and never materialises the
attention probabilities. For the blocks whose probabilities a loss needs, ``block_forward``
runs the same computation explicitly; every other block runs timm's own (fused) forward.
A test checks that both paths agree, so a change in timm cannot slip by unnoticed.

Two kinds of timm block are supported: ``vision_transformer.Block`` (absolute or no position
embedding) and ``vision_transformer_relpos.RelPosBlock`` fed one relative position bias shared by
all blocks (``model.pos_embed: rel_bias``). A position bias and MTO's hard attention mask reach
either kind as one additive mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from timm.layers import Attention
from timm.models.vision_transformer import Block
from timm.models.vision_transformer_relpos import RelPosAttention, RelPosBlock
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from mto.objective.capture import LayerCapture

SUPPORTED = {Block: Attention, RelPosBlock: RelPosAttention}  # block class -> its attention class
# Kernels that give a gradient for an additive mask (the trained position bias): not the flash kernels
# (CUDA's takes no mask; the CPU one has no gradient for it, and vmap's batching rule picks it).
MASK_GRAD_KERNELS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def check_supported(blocks: nn.ModuleList) -> None:
    """Raise TypeError unless every block is timm's pre-norm ``Block`` with ``Attention``, or its ``RelPosBlock``
    with ``RelPosAttention`` reading a shared bias (no table of its own)."""
    for i, blk in enumerate(blocks):
        attn = getattr(blk, "attn", None)
        if SUPPORTED.get(type(blk)) is not type(attn) or getattr(attn, "rel_pos", None) is not None:
            raise TypeError(
                f"block {i} is {type(blk).__name__}/{type(attn).__name__}; MTO needs timm's Block with "
                "Attention, or RelPosBlock with a shared relative position bias"
            )


def combined_mask(attn_mask: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor | None:
    """The one mask a block's attention gets: the hard mask (bool ``[B, 1, T, T]``, True = may attend) as is when
    there is no position bias, else the bias (``[1 or B, H, T, T]``) with ``-inf`` where the hard mask forbids."""
    if bias is None or attn_mask is None:
        return attn_mask if bias is None else bias
    return bias.masked_fill(~attn_mask, float("-inf"))


def call_block(blk: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """timm's own forward of ``blk`` with ``mask`` (``combined_mask``) added to its attention logits."""
    if isinstance(blk, RelPosBlock):
        if mask is not None and mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~mask, float("-inf"))
        with sdpa_kernel(MASK_GRAD_KERNELS):  # inside vmap (fused trials) requires_grad is not visible
            return blk(x, shared_rel_pos=mask)
    return blk(x, attn_mask=mask)


def block_forward(
    blk: Block | RelPosBlock, x: torch.Tensor, attn_mask: torch.Tensor | None = None, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """timm's ``Block.forward`` (or ``RelPosBlock.forward``) with the attention computed explicitly.

    Args:
        x: ``[B, T, D]`` tokens.
        attn_mask: optional ``[B, 1, T, T]`` bool, True = may attend.
        bias: optional additive position bias ``[1 or B, H, T, T]``.
    Returns:
        the block output ``[B, T, D]`` and the attention probabilities ``[B, H, T, T]``.
    """
    attn = blk.attn
    h = blk.norm1(x)
    b, t, _ = h.shape
    gate = attn.gate(h).sigmoid() if getattr(attn, "gate", None) is not None else None
    q, k, v = attn.qkv(h).reshape(b, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    if bias is not None:
        logits = logits + bias
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float("-inf"))
    probs = logits.softmax(dim=-1)
    out = (attn.attn_drop(probs) @ v).transpose(1, 2).reshape(b, t, attn.num_heads * attn.head_dim)
    out = getattr(attn, "norm", nn.Identity())(out)
    if gate is not None:
        out = out * gate
    out = attn.proj_drop(attn.proj(out))
    x = x + blk.drop_path1(blk.ls1(out))
    x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    return x, probs


def run_blocks(
    blocks: nn.ModuleList,
    x: torch.Tensor,
    *,
    num_prefix: int,
    attn_mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    token_layers: frozenset[int] = frozenset(),
    prob_layers: frozenset[int] = frozenset(),
    cross: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, LayerCapture]:
    """Run ``blocks`` over ``x`` ``[B, T, D]``, capturing tokens/probabilities of the requested layers.

    ``attn_mask``: MTO's hard mask (bool, True = may attend); ``bias``: the encoder's shared position bias.

    ``cross``, when given, holds one callable per block whose output ``[B, T, D]`` is added to the
    block's input (BootMAE's cross-attention feature injection into every decoder block).
    """
    capture = LayerCapture()
    mask = combined_mask(attn_mask, bias)
    if 0 in token_layers:
        capture.tokens[0] = x[:, num_prefix:]
    for l, blk in enumerate(blocks, start=1):
        if cross is not None:
            x = x + cross[l - 1](x)
        if l in prob_layers:
            x, capture.probs[l] = block_forward(blk, x, attn_mask, bias)
        else:
            x = call_block(blk, x, mask)
        if l in token_layers:
            capture.tokens[l] = x[:, num_prefix:]
    return x, capture
