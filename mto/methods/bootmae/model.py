"""BootMAE (Dong et al., 2022) on a timm ViT, with MTO on both decoders.

MAE plus two ideas, as in LightDXY/BootMAE:
- bootstrapped targets: a momentum (EMA) copy of the encoder sees the whole image; the output
  of its last block at the masked patches is a second regression target beside the pixels,
  compared after a LayerNorm (no affine) of prediction and target; its loss weight ramps up
  linearly over the first quarter of training and the EMA rate rises 0.999 -> 0.9999;
- target-aware decoders: every decoder block cross-attends to encoder features of the visible
  patches (masked queries included), so the encoder need not carry target-specific detail. The
  pixel decoder reads the first encoder block, the feature decoder the last (the authors'
  ``fea_list=[0, 11]`` of ``bootmae_base``).
With the authors' data path as the MAE family's options: BEiT block masking topped up and rolled,
the decoders' position embedding on mask tokens only, per-channel pixel targets and ``--weight_mask``
(``mto.methods.mae.model``). The momentum encoder runs in eval mode, as the authors' ``feat_model.eval()``.
Mask tokens enter both decoders, so MTO acts on both (its losses are averaged over the two
stacks; heterogeneity is logged for the pixel decoder). docs/baselines.md lists what differs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mto.config import MIMConfig, MTOConfig
from mto.config.errors import ConfigError
from mto.methods.backbone import Encoder, embed_tokens, position_bias, run_encoder
from mto.methods.initialisation import beit_normal_, xavier_layers_
from mto.methods.mae.model import MAE, MAEDecoder, masked_mean_mse
from mto.methods.momentum import ema_update, linear_ramp_momentum, linear_weight_ramp, momentum_copy
from mto.objective.capture import LayerCapture


class CrossAttention(nn.Module):
    """Pre-norm cross-attention of decoder tokens (queries) to encoder features (keys, values).

    Args:
        dim: decoder width; context_dim: encoder width; heads: attention heads.
    """

    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_q, self.norm_ctx = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(context_dim, eps=1e-6)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, T, dim]``, ``context`` ``[B, S, context_dim]`` -> the residual ``[B, T, dim]``."""
        b, t, d = x.shape
        q = self.q(self.norm_q(x)).view(b, t, self.heads, -1).transpose(1, 2)
        k, v = self.kv(self.norm_ctx(context)).view(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


def feature_regression(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """BootMAE's feature loss: MSE between LayerNorm(pred) and LayerNorm(target) (no affine, eps 1e-6 as the
    authors'), per channel, averaged over the masked patches (weighted by ``weights``, the ``--weight_mask``).
    ``pred``, ``target``: ``[B, N, D]``; ``mask``: ``[B, N]``."""
    d = pred.shape[-1:]
    return masked_mean_mse(
        F.layer_norm(pred.float(), d, eps=1e-6), F.layer_norm(target.float(), d, eps=1e-6), mask, weights
    )


class BootMAE(MAE):
    """BootMAE: pixel and momentum-feature regression, cross-attention injection, MTO on both decoders."""

    teachers = ("momentum_encoder",)
    decay_exempt = ("encoder.cls_token", "encoder.pos_embed")  # the authors' no_weight_decay(), unlike MAE's
    init_scheme = "moco_v3"

    def __init__(self, encoder: Encoder, *, mim: MIMConfig, mto: MTOConfig):
        super().__init__(encoder, mim=mim, mto=mto)  # self.decoder: the pixel decoder
        depth, dim = len(encoder.blocks), encoder.embed_dim
        self.context_blocks = list(mim.context_blocks or [0, depth - 1])
        if max(self.context_blocks) >= depth:
            raise ConfigError(
                "mim.context_blocks", mim.context_blocks, f"block indices below the encoder depth {depth}"
            )
        self.momentum_range, self.momentum_ramp_epochs = mim.momentum_range, mim.momentum_ramp_epochs
        self.feature_weight, self.feature_weight_ramp_epochs = mim.feature_weight, mim.feature_weight_ramp_epochs
        self.momentum_encoder = momentum_copy(encoder).eval()
        self.feature_decoder = self.new_decoder(mim, dim, pixels=False)
        self.cross_pixel, self.cross_feature = (
            nn.ModuleList(CrossAttention(mim.decoder_dim, dim, mim.decoder_heads) for _ in range(mim.decoder_depth))
            for _ in range(2)
        )
        for cross in (self.cross_pixel, self.cross_feature):
            xavier_layers_(cross)  # q and kv each one matrix: their names hold no "qkv" in the authors' code

    def new_decoder(self, mim: MIMConfig, out_dim: int, pixels: bool) -> MAEDecoder:
        """BootMAE's decoders: Linear layers xavier-uniform (each third of a fused qkv on its own) with zero biases,
        the mask token BEiT's truncated normal; the pixel head a transposed convolution (one bias per channel)
        that keeps PyTorch's initialisation, U(+-1/sqrt(C p^2)) for weight and bias."""
        decoder = self._decoder(mim, out_dim, channel_bias=self.in_chans if pixels else 0)
        xavier_layers_(decoder, split_qkv=True)
        beit_normal_(decoder.mask_token)
        if pixels:
            bound = 1 / math.sqrt(out_dim)  # fan_in of ConvTranspose2d(D, C, p, p): C p^2
            nn.init.uniform_(decoder.pred.weight, -bound, bound)
            nn.init.uniform_(decoder.pred_bias, -bound, bound)
        return decoder

    def ramp_epochs(self, configured: float | None, share: float, unknown: float) -> float:
        """A ramp's length in epochs: as configured, else ``share`` of the run (``unknown`` when
        ``configure_run`` was not called: models used outside a Trainer)."""
        if configured is not None:
            return configured
        return share * self.epochs if self.epochs else unknown

    def clock_values(self, step: int) -> list[float]:
        """``[momentum, feature weight]`` at ``step``: the authors' momentum ramp over the first eighth of training
        (100 of 800 epochs) and feature-loss weight ramp over the first quarter, both per completed epoch; outside
        a run (no ``configure_run``), the start momentum and the full weight."""
        epoch = step // self.steps_per_epoch
        start, end = self.momentum_range
        momentum = linear_ramp_momentum(epoch, self.ramp_epochs(self.momentum_ramp_epochs, 1 / 8, math.inf), start, end)
        weight = linear_weight_ramp(
            epoch, self.ramp_epochs(self.feature_weight_ramp_epochs, 1 / 4, 0.0), self.feature_weight
        )
        return [momentum, weight]

    @property
    def current_momentum(self) -> float:
        return self.clock_values(self.steps_done)[0]

    @property
    def current_feature_weight(self) -> float:
        return self.clock_values(self.steps_done)[1]

    @torch.no_grad()
    def feature_target(self, images: torch.Tensor) -> torch.Tensor:
        """The momentum encoder's last-block output (before the final norm) at every patch: ``[B, N, D]``."""
        enc = self.momentum_encoder
        x = run_encoder(enc, embed_tokens(enc, enc.patch_embed(images)), position_bias(enc))
        return x[:, self.num_prefix :]

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
        keep = self.keep_indices(mask)
        feats: dict[int, torch.Tensor] = dict.fromkeys(self.context_blocks)
        latent = self.forward_encoder(images, keep, feats)
        captures, preds = [], []
        for decoder, cross, block in (
            (self.decoder, self.cross_pixel, self.context_blocks[0]),
            (self.feature_decoder, self.cross_feature, self.context_blocks[1]),
        ):
            context = feats[block]
            x, capture = self.run_stack(
                decoder.blocks,
                decoder.tokens(latent, keep),
                mask,
                token_layers,
                prob_layers,
                cross=[lambda h, c=c, context=context: c(h, context) for c in cross],
            )
            captures.append(capture)
            preds.append(decoder.head(x))
        loss_pix = self.masked_mse(preds[0], images, mask)
        loss_feat = feature_regression(preds[1], self.feature_target(images), mask, self.patch_weights(mask))
        weight = self.current_feature_weight if clock is None else clock[1]
        parts = {"loss_mim": loss_pix + weight * loss_feat, "loss_pix": loss_pix, "loss_feat": loss_feat}
        return parts, captures

    def after_step(self, clock: torch.Tensor) -> None:
        ema_update(self.momentum_encoder, self.encoder, clock[0])
