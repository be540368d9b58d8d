"""MAE (He et al., 2022) on a timm ViT, with MTO on the decoder.

The encoder sees only the visible patches, so mask tokens first appear in the decoder input:
encoded visible tokens plus mask tokens, plus the decoder's position embedding. That is
layer 0 of the stack MTO acts on, and the decoder blocks are layers 1..L. The loss is MSE on
masked patches, optionally against per-patch normalised pixels.
"""

from __future__ import annotations

import torch
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from mto.attention import LayerCapture
from mto.config import MIMConfig, MTOConfig
from mto.masking import num_masked, random_masking
from mto.models import MaskedImageModel, new_mask_token, patchify


class MAE(MaskedImageModel):
    """MAE with an optional MTO objective on the decoder blocks.

    Args:
        encoder: a timm ViT with a class token.
        mim: mask ratio, decoder size and ``norm_pix_loss``.
        mto: MTO settings.
    """

    def __init__(self, encoder: VisionTransformer, *, mim: MIMConfig, mto: MTOConfig):
        super().__init__(encoder, mto, num_mto_layers=mim.decoder_depth)
        self.num_prefix = encoder.num_prefix_tokens  # the decoder keeps the encoder's prefix tokens
        self.mask_ratio = mim.mask_ratio
        self.num_masked = num_masked(self.num_patches, mim.mask_ratio)
        self.num_keep = self.num_patches - self.num_masked
        self.norm_pix_loss = mim.norm_pix_loss
        in_chans = encoder.patch_embed.proj.in_channels
        dim = mim.decoder_dim
        self.decoder_embed = nn.Linear(encoder.embed_dim, dim)
        self.mask_token = new_mask_token(dim)
        pos = build_sincos2d_pos_embed([self.grid, self.grid], dim)  # fixed, as in MAE: [N, dim]
        self.register_buffer("decoder_pos_embed", pos[None], persistent=False)
        self.decoder_blocks = nn.ModuleList(
            Block(dim, mim.decoder_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(mim.decoder_depth))
        self.decoder_norm = nn.LayerNorm(dim)
        self.decoder_pred = nn.Linear(dim, self.patch_size**2 * in_chans)

    def sample_mask(self, batch: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        return random_masking(batch, self.num_patches, self.mask_ratio, generator=generator, device=device)

    def keep_indices(self, mask: torch.Tensor) -> torch.Tensor:
        """``[B, num_keep]`` indices of the visible patches, in raster order."""
        return torch.argsort(mask.to(torch.int8), dim=1, stable=True)[:, : self.num_keep]

    def forward_encoder(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Encode the visible patches only: ``[B, prefix + num_keep, D]``."""
        enc = self.encoder
        x = enc.patch_embed(images)
        prefix_pos = 0 if enc.no_embed_class else enc.num_prefix_tokens
        x = x + enc.pos_embed[:, prefix_pos:]
        x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        prefix = [t.expand(x.shape[0], -1, -1) for t in (enc.cls_token, enc.reg_token) if t is not None]
        if prefix and prefix_pos:
            prefix = [torch.cat(prefix, dim=1) + enc.pos_embed[:, :prefix_pos]]
        x = torch.cat(prefix + [x], dim=1)
        x = enc.norm_pre(x)
        for blk in enc.blocks:
            x = blk(x)
        return enc.norm(x)

    def decoder_input(self, latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Layer 0 of the MTO stack: visible tokens scattered back among mask tokens, plus position."""
        x = self.decoder_embed(latent)
        prefix, vis = x[:, : self.num_prefix], x[:, self.num_prefix:]
        full = self.mask_token.to(vis.dtype).expand(vis.shape[0], self.num_patches, -1)
        full = full.scatter(1, keep[..., None].expand(-1, -1, vis.shape[-1]), vis)
        return torch.cat([prefix, full + self.decoder_pos_embed.to(full.dtype)], dim=1)

    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor, *, token_layers: frozenset[int],
                    prob_layers: frozenset[int]) -> tuple[dict[str, torch.Tensor], LayerCapture]:
        keep = self.keep_indices(mask)
        x0 = self.decoder_input(self.forward_encoder(images, keep), keep)
        x, capture = self.run_stack(self.decoder_blocks, x0, mask, token_layers, prob_layers)
        pred = self.decoder_pred(self.decoder_norm(x))[:, self.num_prefix:]
        return {"loss_mim": self.masked_mse(pred, images, mask)}, capture

    def masked_mse(self, pred: torch.Tensor, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error per patch, averaged over masked patches only (the MAE loss)."""
        target = patchify(images.float(), self.patch_size)
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = ((pred.float() - target) ** 2).mean(dim=-1)
        m = mask.float()
        return (per_patch * m).sum() / m.sum()
