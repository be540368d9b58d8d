"""ConMIM (Yi et al., 2022) on a timm ViT, with MTO on the encoder.

Masked image modeling as denoising contrast: the encoder sees a masked, perturbed view (mask
tokens substituted before the position embedding, as in SimMIM, so MTO acts on the encoder);
a momentum (EMA) encoder sees the whole clean view. Each masked patch's projected feature must
pick out the momentum feature of the same position among all patches of its own image
(intra-image inter-patch InfoNCE). Asymmetry: only the online view is perturbed, and the
momentum encoder progresses slowly.

Simplified at small scale: the perturbation is additive Gaussian noise on the normalised
online view (``mim.perturb_std``), the projector is one linear layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from mto.attention import LayerCapture
from mto.config import MIMConfig, MTOConfig
from mto.heterogeneity import gather_tokens
from mto.masking import masked_first_order
from mto.momentum import ema_update, momentum_copy
from mto.simmim import SimMIM


def patch_contrast(queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, num_masked: int,
                   temperature: float) -> torch.Tensor:
    """Intra-image inter-patch InfoNCE over the masked patches.

    Args:
        queries: ``[B, N, C]`` online features of the masked view (L2-normalised).
        keys: ``[B, N, C]`` momentum features of the full view (L2-normalised).
        mask: ``[B, N]`` bool, True = masked; num_masked: masked patches per sample.
    Returns:
        mean over masked patches of ``-log softmax_j(q_i . k_j / T)[i]``, ``j`` over the image's patches.
    """
    masked = masked_first_order(mask)[:, :num_masked]  # [B, M] positions of the masked patches
    q = gather_tokens(queries.float(), masked)
    logits = q @ keys.float().transpose(1, 2) / temperature  # [B, M, N]
    return F.cross_entropy(logits.flatten(0, 1), masked.flatten())


class ConMIM(SimMIM):
    """ConMIM: denoising patch contrast against a momentum encoder, MTO on the encoder blocks."""

    def __init__(self, encoder: VisionTransformer, *, mim: MIMConfig, mto: MTOConfig):
        super().__init__(encoder, mim=mim, mto=mto)
        del self.decoder  # no pixel head: the target is the momentum encoder's features
        self.momentum, self.temperature, self.perturb_std = mim.momentum, mim.contrast_temperature, mim.perturb_std
        self.projector = nn.Linear(encoder.embed_dim, encoder.embed_dim)
        self.momentum_encoder = momentum_copy(encoder)
        self.momentum_projector = momentum_copy(self.projector)

    @torch.no_grad()
    def keys(self, images: torch.Tensor) -> torch.Tensor:
        f = self.momentum_encoder.forward_features(images)[:, self.num_prefix:]
        return F.normalize(self.momentum_projector(f).float(), dim=-1)

    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor, *, token_layers: frozenset[int],
                    prob_layers: frozenset[int]) -> tuple[dict[str, torch.Tensor], list[LayerCapture]]:
        noisy = images + self.perturb_std * torch.randn_like(images) if self.training else images
        z, capture = self.encode_masked(noisy, mask, token_layers, prob_layers)
        queries = F.normalize(self.projector(z).float(), dim=-1)
        loss = patch_contrast(queries, self.keys(images), mask, self.num_masked, self.temperature)
        return {"loss_mim": loss}, [capture]

    def on_step_end(self) -> None:
        ema_update(self.momentum_encoder, self.encoder, self.momentum)
        ema_update(self.momentum_projector, self.projector, self.momentum)
