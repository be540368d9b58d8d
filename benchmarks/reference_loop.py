"""Our training steps against a minimal hand-written loop on the same timm model, for every method.

    python benchmarks/reference_loop.py

The reference steps below are the methods written out plainly (as in the papers' public code),
using the very same modules and weights as our models, so the ratio isolates what our
framework adds (the MTO plumbing with MTO off, loss bookkeeping, the layer-capturing block
runner). BootMAE, ConMIM and DTM take their momentum rates, augmentation draws and morphing
draws from the model (schedules and generators are part of the method, not of the plumbing).
Goal: ratio <= 1.05. Prints ``RESULT reference_loop_max <worst ratio>``.
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
from mto.methods.dtm.model import DTM, draw_morphing, morph_groups  # noqa: E402
from mto.methods.mae.model import MAE  # noqa: E402
from mto.methods.simmim.model import SimMIM  # noqa: E402
from mto.training.trainer import Trainer  # noqa: E402


def simmim_loss(m: SimMIM, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
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


def mae_encode(m: MAE, images: torch.Tensor, mask: torch.Tensor, keep_blocks: tuple[int, ...] = ()):
    """MAE's encoder on the visible patches: the normed latent, the un-shuffling index, the kept block outputs."""
    vit = m.encoder
    b = images.shape[0]
    x = vit.patch_embed(images) + vit.pos_embed[:, 1:]
    shuffle = torch.argsort(mask.to(torch.int8), dim=1, stable=True)  # visible first
    restore = torch.argsort(shuffle, dim=1)
    keep = shuffle[:, : m.num_keep]
    x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
    x = torch.cat([(vit.cls_token + vit.pos_embed[:, :1]).expand(b, -1, -1), x], dim=1)
    feats = {}
    for i, blk in enumerate(vit.blocks):
        x = blk(x)
        feats[i] = x
    return vit.norm(x), restore, [feats[i] for i in keep_blocks]


def mae_decode(m: MAE, dec, latent: torch.Tensor, restore: torch.Tensor, cross=None, context=None) -> torch.Tensor:
    b = latent.shape[0]
    x = dec.embed(latent)
    tokens = torch.cat([x[:, 1:], dec.mask_token.to(x.dtype).expand(b, m.num_masked, -1)], dim=1)
    tokens = torch.gather(tokens, 1, restore[..., None].expand(-1, -1, x.shape[-1]))
    x = torch.cat([x[:, :1], tokens + dec.pos_embed.to(x.dtype)], dim=1)
    for i, blk in enumerate(dec.blocks):
        if cross is not None:  # BootMAE: cross-attention to encoder features before each block
            c = cross[i]
            q = c.q(c.norm_q(x)).unflatten(-1, (c.heads, -1)).transpose(1, 2)
            k, v = c.kv(c.norm_ctx(context)).unflatten(-1, (2, c.heads, -1)).permute(2, 0, 3, 1, 4)
            x = x + c.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))
        x = blk(x)
    return dec.pred(dec.norm(x))[:, 1:]


def mae_pixel_loss(m: MAE, pred: torch.Tensor, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    target = patchify(images, m.patch_size)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    per_patch = ((pred.float() - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum()


def mae_loss(m: MAE, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    latent, restore, _ = mae_encode(m, images, mask)
    return mae_pixel_loss(m, mae_decode(m, m.decoder, latent, restore), images, mask)


def bootmae_loss(m: BootMAE, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    latent, restore, (early, deep) = mae_encode(m, images, mask, tuple(m.context_blocks))
    pixels = mae_decode(m, m.decoder, latent, restore, m.cross_pixel, early)
    features = mae_decode(m, m.feature_decoder, latent, restore, m.cross_feature, deep)
    with torch.no_grad():
        ema = m.momentum_encoder
        t = ema.blocks(ema._pos_embed(ema.patch_embed(images)))[:, 1:]
    ln = lambda x: F.layer_norm(x.float(), x.shape[-1:])  # noqa: E731
    feat = (((ln(features) - ln(t)) ** 2).mean(-1) * mask).sum() / mask.sum()
    return mae_pixel_loss(m, pixels, images, mask) + m.current_feature_weight * feat


def masked_encoder(m, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The SimMIM-style encoder on the masked view: final normed patch tokens."""
    vit = m.encoder
    x = vit.patch_embed(images)
    w = mask.unsqueeze(-1).to(x.dtype)
    x = vit._pos_embed(x * (1 - w) + m.mask_token.to(x.dtype) * w)
    return vit.norm(vit.blocks(x))[:, vit.num_prefix_tokens :]


def conmim_loss(m: ConMIM, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    q = F.normalize(m.projector(masked_encoder(m, images, mask)).float(), dim=-1)
    with torch.no_grad():
        f = m.momentum_encoder.forward_features(m.momentum_view(images))[:, 1:]
        k = F.normalize(m.momentum_projector(f).float(), dim=-1)
    logits = (q @ k.transpose(1, 2) / m.temperature)[mask]  # [masked, N]
    labels = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)[mask]
    return F.cross_entropy(logits, labels)


def dtm_loss(m: DTM, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    pred = m.head(masked_encoder(m, images, mask))
    with torch.no_grad():
        target = m.teacher.forward_features(images)[:, 1:].float()
    g, loss = m.step_generator(), 0.0
    for _ in range(m.draws):
        s = morph_groups(target, *draw_morphing(g, m.max_merges, m.max_iterations))  # [B, G, N]
        size = s.sum(-1, keepdim=True)
        p, t = s.transpose(1, 2) @ (s @ pred.float() / size), s.transpose(1, 2) @ (s @ target / size)
        t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
        loss = loss + F.smooth_l1_loss(p, t, beta=2.0)
    return loss / m.draws


REFERENCE = {name: globals()[f"{name}_loss"] for name in registry.names()}  # a hand-written loss for every method


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    dev = device()
    print(f"device {describe(dev)}")
    worst = 0.0
    for method in REFERENCE:
        ours, ref = Trainer(sized_config(method, dev=dev)), Trainer(sized_config(method, dev=dev))
        with torch.no_grad():  # the same loss on the same batch and weights: the two paths agree
            images, mask = ours.fixed_batch(8)
            a, b = ours.model(images, mask)["loss"], REFERENCE[method](ours.model, images, mask)
            assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), (method, a, b)
        med = interleaved(
            {"ours": training_steps(ours, args.steps), "reference": training_steps(ref, args.steps, REFERENCE[method])},
            rounds=args.rounds,
            dev=dev,
        )
        ratio = med["ours"] / med["reference"]
        worst = max(worst, ratio)
        print(
            f"{method:8s} ours {med['ours'] / args.steps * 1e3:8.2f} ms  reference "
            f"{med['reference'] / args.steps * 1e3:8.2f} ms  ratio {ratio:.3f}"
        )
    print(f"RESULT reference_loop_max {worst:.3f}")


if __name__ == "__main__":
    main()
