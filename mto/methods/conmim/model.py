"""ConMIM (Yi et al., 2022) on a timm ViT, with MTO on the encoder.

Masked image modeling as denoising contrast, as in TencentARC/ConMIM: the online encoder sees
the masked view (mask tokens substituted before the position embedding, as in SimMIM, so MTO
acts on the encoder); a momentum (EMA) copy of the encoder and projector sees the whole view,
strongly augmented (colour jitter, grayscale, blur, solarisation: ``mto.data.augment``). Both share
the crop. Each masked patch's projected feature must pick out the momentum feature of the same
position among all patches of its own image (intra-image inter-patch InfoNCE). The projector is
a 3-layer MLP (Linear-BN-ReLU, last BN without affine); the EMA rate rises 0.996 -> 1 on a
per-step cosine. docs/baselines.md lists what differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mto.config import MIMConfig, MTOConfig
from mto.data.augment import StrongAugmentation
from mto.methods.backbone import Encoder
from mto.methods.initialisation import beit_layers_
from mto.methods.momentum import cosine_momentum, ema_update, momentum_copy
from mto.methods.simmim.model import SimMIM
from mto.objective.capture import LayerCapture
from mto.objective.heterogeneity import gather_tokens, masked_first_order


def patch_contrast(
    queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, num_masked: int, temperature: float
) -> torch.Tensor:
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


class TokenMLP(nn.Module):
    """ConMIM's (MoCo v3's) projector on tokens ``[B, N, C_in]`` -> ``[B, N, C_out]``: ``depth`` bias-free
    linear layers with BatchNorm over all tokens of the batch and ReLU between, a final affine-free BN."""

    def __init__(self, depth: int, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            last = i == depth - 1
            layers.append(nn.Linear(in_dim if i == 0 else hidden_dim, out_dim if last else hidden_dim, bias=False))
            layers += [nn.BatchNorm1d(out_dim, affine=False)] if last else [nn.BatchNorm1d(hidden_dim), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x.flatten(0, 1)).view(*x.shape[:2], -1)


class ConMIM(SimMIM):
    """ConMIM: denoising patch contrast against a momentum encoder, MTO on the encoder blocks.

    The momentum encoder runs in eval mode (no drop-path: the authors' default drop-path is 0, where train
    and eval mode agree); the momentum projector stays in train mode, its BatchNorm on the batch's
    statistics, as the authors' teacher, which is never put in eval mode.
    """

    teachers = ("momentum_encoder",)

    def __init__(self, encoder: Encoder, *, mim: MIMConfig, mto: MTOConfig):
        super().__init__(encoder, mim=mim, mto=mto)
        del self.decoder  # no pixel head: the target is the momentum encoder's features
        self.temperature, self.momentum_range = mim.contrast_temperature, mim.momentum_range
        self.augmentation = StrongAugmentation(
            tuple(mim.strong_jitter),
            mim.strong_jitter_prob,
            mim.strong_gray_prob,
            mim.strong_blur_prob,
            mim.strong_solarize_prob,
        )
        dim = encoder.embed_dim
        self.projector = TokenMLP(
            mim.projector_depth, dim, mim.projector_hidden_dim or 4 * dim, mim.projector_dim or dim
        )
        beit_layers_(self.projector)  # built before the authors' model.apply(_init_weights)
        self.momentum_encoder = momentum_copy(encoder).eval()
        self.momentum_projector = momentum_copy(self.projector)

    def clock_values(self, step: int) -> list[float]:
        """``[momentum]`` of the EMA branch at ``step`` (a per-step cosine rise)."""
        return [cosine_momentum(step, self.total_steps, *self.momentum_range)]

    @property
    def current_momentum(self) -> float:
        return self.clock_values(self.steps_done)[0]

    def draw(self, generator: torch.Generator, batch: int) -> torch.Tensor:
        """The strong augmentation's per-image parameters of one step, ``[batch, 9]``."""
        return self.augmentation.params(batch, generator)

    def momentum_view(self, images: torch.Tensor, draws: torch.Tensor | None = None) -> torch.Tensor:
        """The full view the momentum branch sees: strongly augmented in training (with ``draws``, or this step's
        own), as is in evaluation."""
        if not self.training:
            return images
        mean, std = self.pixel_mean[:, None, None], self.pixel_std[:, None, None]
        params = self.draw(self.step_generator(), images.shape[0]) if draws is None else draws
        return (self.augmentation((images * std + mean).clamp(0, 1), params) - mean) / std

    @torch.no_grad()
    def keys(self, images: torch.Tensor, draws: torch.Tensor | None = None) -> torch.Tensor:
        f = self.momentum_encoder.forward_features(self.momentum_view(images, draws))
        return F.normalize(self.momentum_projector(f)[:, self.num_prefix :].float(), dim=-1)

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
        z, capture = self.encode_masked(images, mask, token_layers, prob_layers, prefix=True)
        # the projector's BatchNorm takes its statistics over every token, the class token too (the authors')
        queries = F.normalize(self.projector(z)[:, self.num_prefix :].float(), dim=-1)
        loss = patch_contrast(queries, self.keys(images, draws), mask, self.num_masked, self.temperature)
        return {"loss_mim": loss}, [capture]

    def after_step(self, clock: torch.Tensor) -> None:
        ema_update(self.momentum_encoder, self.encoder, clock[0])
        ema_update(self.momentum_projector, self.projector, clock[0])
