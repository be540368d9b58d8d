"""BootMAE (Dong et al., 2022) on a timm ViT, with MTO on both decoders.

MAE plus two ideas: a momentum (EMA) encoder sees the whole image and its features of the
masked patches are a second regression target beside the pixels; and a target-aware decoder
design in which the encoder's visible features are injected into every decoder block, so the
encoder need not carry target-specific details through to the decoder. One decoder predicts
pixels, the other the momentum features. Mask tokens enter both decoders, so MTO acts on both
(its losses are averaged over the two stacks; heterogeneity is logged for the pixel decoder).

Simplified at small scale: injection adds a linear projection of the encoder's last-layer
visible features at the visible positions (the paper injects through the decoder's attention),
and the feature target is the momentum encoder's last layer, layer-normalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from mto.attention import LayerCapture
from mto.config import MIMConfig, MTOConfig
from mto.mae import MAE, masked_mean_mse
from mto.momentum import ema_update, momentum_copy


class BootMAE(MAE):
    """BootMAE: pixel and momentum-feature regression, feature injection, MTO on both decoders."""

    def __init__(self, encoder: VisionTransformer, *, mim: MIMConfig, mto: MTOConfig):
        super().__init__(encoder, mim=mim, mto=mto)  # self.decoder: the pixel decoder
        self.momentum, self.feature_weight = mim.momentum, mim.feature_weight
        self.momentum_encoder = momentum_copy(encoder)
        self.feature_decoder = self.new_decoder(mim, encoder.embed_dim)
        self.inject_pixel = nn.Linear(encoder.embed_dim, mim.decoder_dim)
        self.inject_feature = nn.Linear(encoder.embed_dim, mim.decoder_dim)

    def injection(self, proj: nn.Linear, latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Projected visible encoder features at their positions, zero elsewhere: ``[B, prefix + N, dim]``."""
        vis = proj(latent[:, self.num_prefix:])
        full = vis.new_zeros(vis.shape[0], self.num_prefix + self.num_patches, vis.shape[-1])
        return full.scatter(1, (keep + self.num_prefix)[..., None].expand(-1, -1, vis.shape[-1]), vis)

    @torch.no_grad()
    def feature_target(self, images: torch.Tensor) -> torch.Tensor:
        """The momentum encoder's patch features of the whole image, layer-normalised: ``[B, N, D]``."""
        f = self.momentum_encoder.forward_features(images)[:, self.num_prefix:]
        return F.layer_norm(f.float(), f.shape[-1:])

    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor, *, token_layers: frozenset[int],
                    prob_layers: frozenset[int]) -> tuple[dict[str, torch.Tensor], list[LayerCapture]]:
        keep = self.keep_indices(mask)
        latent = self.forward_encoder(images, keep)
        captures, preds = [], []
        for decoder, proj in ((self.decoder, self.inject_pixel), (self.feature_decoder, self.inject_feature)):
            x, capture = self.run_stack(decoder.blocks, decoder.tokens(latent, keep), mask, token_layers, prob_layers,
                                        inject=self.injection(proj, latent, keep))
            captures.append(capture)
            preds.append(decoder.head(x))
        loss_pix = self.masked_mse(preds[0], images, mask)
        loss_feat = masked_mean_mse(preds[1], self.feature_target(images), mask)
        parts = {"loss_mim": loss_pix + self.feature_weight * loss_feat, "loss_pix": loss_pix, "loss_feat": loss_feat}
        return parts, captures

    def on_step_end(self) -> None:
        ema_update(self.momentum_encoder, self.encoder, self.momentum)
