"""SimMIM (Xie et al., 2022) on a timm ViT, with MTO on the encoder.

The learnable mask token replaces masked patch embeddings right after ``patch_embed`` and
before the position embedding, so the encoder's layers are where mask tokens live and where
MTO acts. A 1x1 convolution and PixelShuffle predict the pixels; the loss is L1 on masked
pixels only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mto.config import MIMConfig, MTOConfig
from mto.methods.backbone import Encoder, embed_tokens, position_bias
from mto.methods.base import MaskedImageModel, new_mask_token
from mto.methods.masking import block_masking
from mto.objective.capture import LayerCapture


class SimMIM(MaskedImageModel):
    """SimMIM with an optional MTO objective on the encoder blocks.

    Args:
        encoder: a timm ViT (its prefix tokens are kept, as in SimMIM's ViT).
        mim: mask ratio and mask-block size.
        mto: MTO settings.
    """

    def __init__(self, encoder: Encoder, *, mim: MIMConfig, mto: MTOConfig):
        super().__init__(encoder, mto, num_mto_layers=len(encoder.blocks))
        self.num_prefix = encoder.num_prefix_tokens
        self.mask_ratio = mim.mask_ratio
        block_px = mim.mask_patch_size or self.patch_size * (2 if self.grid % 2 == 0 else 1)
        self.mask_block = block_px // self.patch_size
        blocks = (self.grid // self.mask_block) ** 2
        self.num_masked = min(blocks, math.ceil(blocks * self.mask_ratio)) * self.mask_block**2
        self.mask_token = new_mask_token(encoder.embed_dim)
        self.in_chans = encoder.patch_embed.proj.in_channels
        self.decoder = nn.Sequential(
            nn.Conv2d(encoder.embed_dim, self.patch_size**2 * self.in_chans, kernel_size=1),
            nn.PixelShuffle(self.patch_size),
        )

    def sample_mask(self, batch: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        return block_masking(batch, self.grid, self.mask_block, self.mask_ratio, generator=generator, device=device)

    def embed(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Layer 0: patch embeddings with the mask token substituted, plus position embedding. ``[B, T, D]``."""
        x = self.encoder.patch_embed(images)  # [B, N, D]
        w = mask.unsqueeze(-1).to(x.dtype)
        x = x * (1 - w) + self.mask_token.to(x.dtype) * w
        return embed_tokens(self.encoder, x)

    def reconstruct(
        self,
        images: torch.Tensor,
        mask: torch.Tensor,
        *,
        token_layers: frozenset[int],
        prob_layers: frozenset[int],
        clock: torch.Tensor | None = None,
        draws: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], list[LayerCapture]]:
        z, capture = self.encode_masked(images, mask, token_layers, prob_layers)
        b, n, d = z.shape
        pred = self.decoder(z.transpose(1, 2).reshape(b, d, self.grid, self.grid))  # [B, C, H, W]
        return {"loss_mim": self.masked_l1(pred, images, mask)}, [capture]

    def encode_masked(
        self,
        images: torch.Tensor,
        mask: torch.Tensor,
        token_layers: frozenset[int],
        prob_layers: frozenset[int],
        prefix: bool = False,
    ) -> tuple[torch.Tensor, LayerCapture]:
        """The encoder (the MTO stack) on the masked view: final normed patch tokens ``[B, N, D]`` (with ``prefix``,
        the prefix tokens before them) and the capture."""
        x, capture = self.run_stack(
            self.encoder.blocks,
            self.embed(images, mask),
            mask,
            token_layers,
            prob_layers,
            bias=position_bias(self.encoder),
        )
        return self.encoder.norm(x)[:, 0 if prefix else self.num_prefix :], capture

    def masked_l1(self, pred: torch.Tensor, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """L1 over masked pixels only, averaged over them and the channels (the SimMIM loss)."""
        m = mask.view(-1, 1, self.grid, self.grid).to(pred.dtype)
        m = m.repeat_interleave(self.patch_size, 2).repeat_interleave(self.patch_size, 3)
        err = F.l1_loss(pred.float(), images.float(), reduction="none")
        return (err * m).sum() / (m.sum() + 1e-5) / self.in_chans
