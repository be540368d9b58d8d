"""Our training steps against a minimal hand-written loss on the same timm model, for every method.

    python benchmarks/reference_loop.py [--methods simmim,mae] [--smoke]

The reference losses below are the methods written out plainly (as in the papers' public code),
using the very same modules and weights as our models, so the ratio isolates what our
framework adds (the MTO plumbing with MTO off, loss bookkeeping, the layer-capturing block
runner). Both sides go through the same ``TrainStep`` (gradients, AdamW, the method's own update),
compiled alike: both compiled where ``train.compile`` compiles (CUDA), both eager elsewhere. BootMAE,
ConMIM and DTM take their clock (momentum, feature-loss weight) and draws (augmentations, morphing) from
the step's inputs, as our models do; the BootMAE reference follows today's BootMAE (BEiT block masks,
mask-token-only decoder positions, per-channel pixel targets, neighbour-weighted loss, last-block features).
Each reference is first checked to give our loss on a batch. Goal: ratio <= 1.05.
Prints ``RESULT reference_loop_max <worst ratio>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.harness import arguments, describe, device, interleaved, sized_config, training_steps  # noqa: E402
from mto.methods import registry  # noqa: E402
from mto.methods.base import patchify  # noqa: E402
from mto.methods.bootmae.model import BootMAE  # noqa: E402
from mto.methods.conmim.model import ConMIM  # noqa: E402
from mto.methods.dtm.model import DTM, morph_groups  # noqa: E402
from mto.methods.mae.model import MAE  # noqa: E402
from mto.methods.simmim.model import SimMIM  # noqa: E402
from mto.training.step import TrainStep  # noqa: E402
from mto.training.trainer import Trainer  # noqa: E402


def mae_encode(m: MAE, images: torch.Tensor, mask: torch.Tensor, keep_blocks: tuple[int, ...] = ()):
    """MAE's encoder on the visible patches: the normed latent, the visible patches' indices, the kept block
    outputs (before the final norm)."""
    vit = m.encoder
    b = images.shape[0]
    x = vit.patch_embed(images) + vit.pos_embed[:, 1:]
    keep = torch.argsort(mask.to(torch.int8), dim=1, stable=True)[:, : m.num_keep]  # visible, in raster order
    x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
    x = torch.cat([(vit.cls_token + vit.pos_embed[:, :1]).expand(b, -1, -1), x], dim=1)
    feats = {}
    for i, blk in enumerate(vit.blocks):
        x = blk(x)
        feats[i] = x
    return vit.norm(x), keep, [feats[i] for i in keep_blocks]


def mae_decode(m: MAE, dec, latent: torch.Tensor, keep: torch.Tensor, cross=None, context=None) -> torch.Tensor:
    b, d = latent.shape[0], dec.embed.out_features
    x = dec.embed(latent)
    pos = dec.pos_embed.to(x.dtype).expand(b, -1, -1)
    index = keep[..., None].expand(-1, -1, d)
    if m.pos_embed_mask_only:  # BootMAE: mask tokens carry the position, visible tokens come as encoded
        tokens = (dec.mask_token.to(x.dtype) + pos).scatter(1, index, x[:, 1:])
    else:  # MAE: every patch token gets its position
        tokens = dec.mask_token.to(x.dtype).expand(b, m.num_patches, -1).scatter(1, index, x[:, 1:]) + pos
    x = torch.cat([x[:, :1], tokens], dim=1)
    for i, blk in enumerate(dec.blocks):
        if cross is not None:  # BootMAE: cross-attention to encoder features before each block
            c = cross[i]
            q = c.q(c.norm_q(x)).unflatten(-1, (c.heads, -1)).transpose(1, 2)
            k, v = c.kv(c.norm_ctx(context)).unflatten(-1, (2, c.heads, -1)).permute(2, 0, 3, 1, 4)
            x = x + c.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))
        x = blk(x)
    out = dec.pred(dec.norm(x))[:, 1:]
    if dec.pred_bias is not None:  # BootMAE's transposed-convolution head: one bias per channel of every pixel
        out = (out.unflatten(-1, (-1, dec.pred_bias.numel())) + dec.pred_bias).flatten(-2)
    return out


def mae_pixel_loss(m: MAE, pred: torch.Tensor, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    target = patchify(images.float(), m.patch_size)
    if m.norm_pix_per_channel:  # BootMAE: standardised per patch and channel, biased variance, eps 1e-5
        t = target.unflatten(-1, (-1, m.in_chans))
        target = ((t - t.mean(-2, keepdim=True)) / (t.var(-2, keepdim=True, unbiased=False) + 1e-5).sqrt()).flatten(-2)
    else:  # MAE: standardised per patch
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    per_patch = ((pred.float() - target) ** 2).mean(-1)
    return (per_patch * patch_weights(m, mask)).sum() / mask.sum()


def patch_weights(m: MAE, mask: torch.Tensor) -> torch.Tensor:
    """The mask, or with BootMAE's --weight_mask 1 + (masked patches in the 3x3 neighbourhood) / 9 at masked ones."""
    if not m.weight_mask:
        return mask.float()
    grid = mask.float().view(-1, 1, m.grid, m.grid)
    near = F.conv2d(grid, torch.ones(1, 1, 3, 3, device=mask.device), padding=1) / 9
    return (grid * (1 + near)).flatten(1)


def mae_loss(m: MAE, images: torch.Tensor, mask: torch.Tensor, clock, draws) -> torch.Tensor:
    latent, keep, _ = mae_encode(m, images, mask)
    return mae_pixel_loss(m, mae_decode(m, m.decoder, latent, keep), images, mask)


def bootmae_loss(m: BootMAE, images: torch.Tensor, mask: torch.Tensor, clock, draws) -> torch.Tensor:
    latent, keep, (early, deep) = mae_encode(m, images, mask, tuple(m.context_blocks))
    pixels = mae_decode(m, m.decoder, latent, keep, m.cross_pixel, early)
    features = mae_decode(m, m.feature_decoder, latent, keep, m.cross_feature, deep)
    with torch.no_grad():  # the momentum encoder's last block, before its norm, on the whole image
        ema = m.momentum_encoder
        t = ema.blocks(ema._pos_embed(ema.patch_embed(images)))[:, 1:]
    ln = lambda x: F.layer_norm(x.float(), x.shape[-1:], eps=1e-6)  # noqa: E731
    feat = (((ln(features) - ln(t)) ** 2).mean(-1) * patch_weights(m, mask)).sum() / mask.sum()
    return mae_pixel_loss(m, pixels, images, mask) + clock[1] * feat


def masked_encoder(m, images: torch.Tensor, mask: torch.Tensor, prefix: bool = False) -> torch.Tensor:
    """The SimMIM-style encoder on the masked view: final normed tokens (patch tokens only unless ``prefix``)."""
    vit = m.encoder
    x = vit.patch_embed(images)
    w = mask.unsqueeze(-1).to(x.dtype)
    x = vit._pos_embed(x * (1 - w) + m.mask_token.to(x.dtype) * w)
    return vit.norm(vit.blocks(x))[:, 0 if prefix else vit.num_prefix_tokens :]


def conmim_loss(m: ConMIM, images: torch.Tensor, mask: torch.Tensor, clock, draws) -> torch.Tensor:
    # both projectors' BatchNorm take their statistics over every token, the class token too
    q = F.normalize(m.projector(masked_encoder(m, images, mask, prefix=True))[:, 1:].float(), dim=-1)
    with torch.no_grad():
        f = m.momentum_encoder.forward_features(m.momentum_view(images, draws))
        k = F.normalize(m.momentum_projector(f)[:, 1:].float(), dim=-1)
    b, n = mask.shape
    masked = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, : m.num_masked]  # static shapes
    logits = q.gather(1, masked[..., None].expand(-1, -1, q.shape[-1])) @ k.transpose(1, 2) / m.temperature
    return F.cross_entropy(logits.flatten(0, 1), masked.flatten())


def dtm_loss(m: DTM, images: torch.Tensor, mask: torch.Tensor, clock, draws) -> torch.Tensor:
    pred = m.head(masked_encoder(m, images, mask))
    with torch.no_grad():
        target = m.teacher.forward_features(images)[:, 1:].float()
    loss = 0.0
    for r, k in draws.unbind(0):
        s = morph_groups(target, r, k, m.protect_first, max_iterations=m.max_iterations)  # [B, N, N]
        size = s.sum(-1, keepdim=True).clamp(min=1)
        p, t = s.transpose(1, 2) @ (s @ pred.float() / size), s.transpose(1, 2) @ (s @ target / size)
        t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
        loss = loss + F.smooth_l1_loss(p, t, beta=2.0)
    return loss / m.draws


def simmim_loss(m: SimMIM, images: torch.Tensor, mask: torch.Tensor, clock, draws) -> torch.Tensor:
    vit = m.encoder
    x = vit.patch_embed(images)
    w = mask.unsqueeze(-1).to(x.dtype)
    x = vit._pos_embed(x * (1 - w) + m.mask_token.to(x.dtype) * w)
    for blk in vit.blocks:
        x = blk(x)
    z = vit.norm(x)[:, vit.num_prefix_tokens :]
    b, n, d = z.shape
    pred = m.decoder(z.transpose(1, 2).reshape(b, d, m.grid, m.grid))
    pix = mask.view(b, 1, m.grid, m.grid).float()
    pix = pix.repeat_interleave(m.patch_size, 2).repeat_interleave(m.patch_size, 3)
    return (F.l1_loss(pred.float(), images, reduction="none") * pix).sum() / (pix.sum() + 1e-5) / images.shape[1]


REFERENCE = {name: globals()[f"{name}_loss"] for name in registry.names()}  # a hand-written loss for every method


def main() -> None:
    args = arguments(__doc__.splitlines()[0], methods=True)
    dev = device()
    print(f"device {describe(dev)}", flush=True)
    worst = 0.0
    for method in args.methods or registry.names():
        cfg = sized_config(method, dev=dev, smoke=args.smoke)
        ours, ref = Trainer(cfg), Trainer(cfg)
        reference = TrainStep(
            ref.model,
            ref.optimizer,
            cfg.train.grad_clip,
            ref.autocast,
            ref.train_step.backend,
            REFERENCE[method],
            cfg.train.cuda_graphs,
        )
        with torch.no_grad():  # the same loss on the same batch, weights, clock and draws: the two paths agree
            images, mask = ours.fixed_batch(8)
            clock, draws = ours.model.clock(), ours.model.step_draws(0, 1, 8)
            draws = None if draws is None else draws[0]
            a = ours.model(images, mask, clock=clock, draws=draws)["loss"]
            b = REFERENCE[method](ours.model, images, mask, clock, draws)
            assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), (method, a, b)
        med = interleaved(
            {"ours": training_steps(ours, args.steps), "reference": training_steps(ref, args.steps, reference)},
            rounds=args.rounds,
            dev=dev,
        )
        ratio = med["ours"] / med["reference"]
        worst = max(worst, ratio)
        print(
            f"{method:8s} ours {med['ours'] / args.steps * 1e3:8.2f} ms  reference "
            f"{med['reference'] / args.steps * 1e3:8.2f} ms  ratio {ratio:.3f}  "
            f"({ours.train_step.fallback.way}, both)",
            flush=True,
        )
    print(f"RESULT reference_loop_max {worst:.3f}")


if __name__ == "__main__":
    main()
