"""MAE (He et al., 2022) on a timm ViT, with MTO on the decoder.

The encoder sees only the visible patches, so mask tokens first appear in the decoder input:
encoded visible tokens plus mask tokens, plus the decoder's position embedding. That is
layer 0 of the stack MTO acts on, and the decoder blocks are layers 1..L. The loss is MSE on
masked patches, optionally against per-patch normalised pixels. As in facebookresearch/mae,
the encoder's and the decoder's position embeddings are fixed 2-D sin-cos (not learnt).

The MAE family's options (``mim.block_masking``, ``pos_embed_mask_only``, ``norm_pix_per_channel``,
``weight_mask``) are where BootMAE's authors differ from MAE's; each is on by default for BootMAE only.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from mto.config import MIMConfig, MTOConfig
from mto.methods.backbone import Encoder, position_bias, pre_norm, run_encoder, visible_bias
from mto.methods.base import MaskedImageModel, new_mask_token, patchify
from mto.methods.initialisation import xavier_layers_
from mto.methods.mae import FAMILY_OPTIONS
from mto.methods.masking import beit_block_masking, num_masked, random_masking
from mto.objective.capture import LayerCapture


def sincos_position_embedding(grid: int, dim: int) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos position embedding ``[grid * grid, dim]``, patches in raster order.

    The first half of the channels encodes the column, the second the row; each half is
    ``[sin(pos * w), cos(pos * w)]`` with ``w_i = 10000^(-i / (dim / 4))``, ``i < dim / 4``.
    """
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    row, col = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )

    def one_axis(pos: torch.Tensor) -> torch.Tensor:
        angle = pos.flatten()[:, None] * omega[None]
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    return torch.cat([one_axis(col), one_axis(row)], dim=1).float()


def fix_sincos_position_embedding(vit: Encoder) -> None:
    """Replace a timm ViT's learnable position embedding with MAE's fixed sin-cos one (zeros at the
    prefix tokens' positions) and freeze it. Encoders without one (``model.pos_embed: rel_bias | none``) are left
    as they are."""
    pos = getattr(vit, "pos_embed", None)
    if pos is None:
        return
    grid = vit.patch_embed.grid_size[0]
    prefix = pos.shape[1] - grid * grid
    with torch.no_grad():
        pos.copy_(
            torch.cat([pos.new_zeros(prefix, pos.shape[-1]), sincos_position_embedding(grid, pos.shape[-1])])[None]
        )
    pos.requires_grad_(False)


class MAEDecoder(nn.Module):
    """MAE's light decoder: embed the encoded visible tokens, fill the gaps with the mask token,
    add a fixed 2D sin-cos position embedding (to every patch token, or with ``mask_only`` to the mask
    tokens only, as BootMAE's decoders do), run ``blocks``, predict ``out_dim`` per patch. Its LayerNorms use
    eps 1e-6 (the authors'). With ``channel_bias`` C, the prediction's bias is one per channel, shared by every
    pixel of a patch (BootMAE's transposed-convolution head), not one per output value."""

    def __init__(
        self,
        *,
        enc_dim: int,
        dim: int,
        depth: int,
        heads: int,
        grid: int,
        out_dim: int,
        num_prefix: int,
        mask_only: bool = False,
        channel_bias: int = 0,
    ):
        super().__init__()
        self.num_prefix, self.num_patches, self.mask_only = num_prefix, grid * grid, mask_only
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = new_mask_token(dim)
        self.register_buffer("pos_embed", sincos_position_embedding(grid, dim)[None], persistent=False)
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm) for _ in range(depth)
        )
        self.norm = norm(dim)
        self.pred = nn.Linear(dim, out_dim, bias=not channel_bias)
        self.pred_bias = nn.Parameter(torch.zeros(channel_bias)) if channel_bias else None

    def tokens(self, latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Layer 0: visible tokens scattered back among mask tokens, plus position. ``[B, prefix + N, dim]``."""
        x = self.embed(latent)
        prefix, vis = x[:, : self.num_prefix], x[:, self.num_prefix :]
        pos = self.pos_embed.to(vis.dtype)
        if self.mask_only:  # the position rides on the mask tokens; visible tokens come as the encoder left them
            full = (self.mask_token.to(vis.dtype) + pos).expand(vis.shape[0], -1, -1)
            return torch.cat([prefix, full.scatter(1, keep[..., None].expand(-1, -1, vis.shape[-1]), vis)], dim=1)
        full = self.mask_token.to(vis.dtype).expand(vis.shape[0], self.num_patches, -1)
        full = full.scatter(1, keep[..., None].expand(-1, -1, vis.shape[-1]), vis)
        return torch.cat([prefix, full + pos], dim=1)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Per-patch predictions ``[B, N, out_dim]`` (prefix tokens dropped)."""
        out = self.pred(self.norm(x))[:, self.num_prefix :]
        if self.pred_bias is None:
            return out
        return out + self.pred_bias.repeat(out.shape[-1] // self.pred_bias.numel())  # channel last (``patchify``)


class MAE(MaskedImageModel):
    """MAE with an optional MTO objective on the decoder blocks.

    The authors' optimiser (timm's ``add_weight_decay`` without a skip list) decays the class and mask tokens.

    Args:
        encoder: a timm ViT with a class token.
        mim: mask ratio, decoder size and ``norm_pix_loss``.
        mto: MTO settings.
    """

    decay_exempt = ()
    init_scheme = "xavier"

    def __init__(self, encoder: Encoder, *, mim: MIMConfig, mto: MTOConfig):
        super().__init__(encoder, mto, num_mto_layers=mim.decoder_depth)
        fix_sincos_position_embedding(encoder)
        self.num_prefix = encoder.num_prefix_tokens  # the decoder keeps the encoder's prefix tokens
        self.mask_ratio = mim.mask_ratio
        self.num_masked = num_masked(self.num_patches, mim.mask_ratio)
        self.num_keep = self.num_patches - self.num_masked
        self.norm_pix_loss = mim.norm_pix_loss
        self.block_masking, self.pos_embed_mask_only, self.norm_pix_per_channel, self.weight_mask = (
            mim.option(name) for name in FAMILY_OPTIONS
        )
        self.in_chans = encoder.patch_embed.proj.in_channels
        self.decoder = self.new_decoder(mim, self.patch_size**2 * self.in_chans, pixels=True)

    @property
    def mask_token(self) -> nn.Parameter:
        return self.decoder.mask_token

    def new_decoder(self, mim: MIMConfig, out_dim: int, pixels: bool) -> MAEDecoder:
        """A decoder predicting ``out_dim`` per patch (the pixels, or features), initialised as MAE's: Linear
        layers xavier-uniform with zero biases, the mask token normal with std 0.02."""
        decoder = self._decoder(mim, out_dim)
        xavier_layers_(decoder)
        nn.init.normal_(decoder.mask_token, std=0.02)
        return decoder

    def _decoder(self, mim: MIMConfig, out_dim: int, channel_bias: int = 0) -> MAEDecoder:
        return MAEDecoder(
            enc_dim=self.encoder.embed_dim,
            dim=mim.decoder_dim,
            depth=mim.decoder_depth,
            heads=mim.decoder_heads,
            grid=self.grid,
            out_dim=out_dim,
            num_prefix=self.num_prefix,
            mask_only=self.pos_embed_mask_only,
            channel_bias=channel_bias,
        )

    def sample_mask(self, batch: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        if self.block_masking:
            return beit_block_masking(batch, self.grid, self.num_masked, generator=generator, device=device)
        return random_masking(batch, self.num_patches, self.mask_ratio, generator=generator, device=device)

    def keep_indices(self, mask: torch.Tensor) -> torch.Tensor:
        """``[B, num_keep]`` indices of the visible patches, in raster order."""
        return torch.argsort(mask.to(torch.int8), dim=1, stable=True)[:, : self.num_keep]

    def forward_encoder(
        self, images: torch.Tensor, keep: torch.Tensor, outputs: dict[int, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Encode the visible patches only: ``[B, prefix + num_keep, D]``.

        ``outputs``, when given, is filled with the (un-normed) output of each block index it holds as a key.
        """
        enc = self.encoder
        x = enc.patch_embed(images)
        pos = getattr(enc, "pos_embed", None)  # absent with model.pos_embed: rel_bias | none
        prefix_pos = 0 if pos is None or enc.no_embed_class else enc.num_prefix_tokens
        if pos is not None:
            x = x + pos[:, prefix_pos:]
        x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        prefix = [
            t.expand(x.shape[0], -1, -1) for t in (enc.cls_token, getattr(enc, "reg_token", None)) if t is not None
        ]
        if prefix and prefix_pos:
            prefix = [torch.cat(prefix, dim=1) + pos[:, :prefix_pos]]
        x = pre_norm(enc, torch.cat(prefix + [x], dim=1))
        bias = position_bias(enc)
        bias = None if bias is None else visible_bias(bias, keep, self.num_prefix)
        return enc.norm(run_encoder(enc, x, bias, outputs))

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
        latent = self.forward_encoder(images, keep)
        x, capture = self.run_stack(
            self.decoder.blocks, self.decoder.tokens(latent, keep), mask, token_layers, prob_layers
        )
        return {"loss_mim": self.masked_mse(self.decoder.head(x), images, mask)}, [capture]

    def pixel_target(self, images: torch.Tensor) -> torch.Tensor:
        """Per-patch pixels ``[B, N, p*p*C]``, normalised per patch (or per patch and channel) when
        ``norm_pix_loss``."""
        target = patchify(images.float(), self.patch_size)
        if self.norm_pix_loss and self.norm_pix_per_channel:
            return per_channel_normalized(target, self.in_chans)
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target

    def patch_weights(self, mask: torch.Tensor) -> torch.Tensor | None:
        """The loss weight of each patch with ``weight_mask`` (``neighbour_weights``), else None (the mask itself)."""
        return neighbour_weights(mask, self.grid) if self.weight_mask else None

    def masked_mse(self, pred: torch.Tensor, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error per patch, averaged over masked patches only (the MAE loss)."""
        return masked_mean_mse(pred, self.pixel_target(images), mask, self.patch_weights(mask))


def per_channel_normalized(patches: torch.Tensor, channels: int) -> torch.Tensor:
    """BootMAE's target: each patch's pixels ``[B, N, p*p*C]`` standardised per channel (biased variance,
    ``sqrt(var + 1e-5)``, the authors' run_pretraining.py)."""
    x = patches.unflatten(-1, (-1, channels))  # [B, N, p*p, C]
    mean, var = x.mean(dim=-2, keepdim=True), x.var(dim=-2, keepdim=True, unbiased=False)
    return ((x - mean) / (var + 1e-5).sqrt()).flatten(-2)


def neighbour_weights(mask: torch.Tensor, grid: int) -> torch.Tensor:
    """BootMAE's ``--weight_mask``: each masked patch weighted ``1 + (masked patches in its 3x3 neighbourhood,
    itself included) / 9`` (zero padding at the border), visible patches 0. ``[B, N]`` -> ``[B, N]`` float."""
    m = mask.float().view(-1, 1, grid, grid)
    return (m * F.avg_pool2d(m, 3, stride=1, padding=1, count_include_pad=True) + m).flatten(1)


def masked_mean_mse(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``sum_patches w (mean_dim (pred - target)^2) / (masked patches)`` for ``[B, N, C]`` predictions and targets;
    ``w`` is the mask (the MAE loss: the mean over masked patches) unless ``weights`` ``[B, N]`` are given
    (BootMAE's ``--weight_mask``, divided by the masked patches as the authors do, not by the weights' sum)."""
    per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)
    m = mask.float()
    return (per_patch * (m if weights is None else weights)).sum() / m.sum()
