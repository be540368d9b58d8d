"""Our SimMIM and MAE training steps against a minimal hand-written loop on the same timm model.

    python benchmarks/reference_loop.py

The reference steps below are the methods written out plainly (as in the papers' public code),
using the very same modules and weights as our models, so the ratio isolates what our
framework adds (the MTO plumbing with MTO off, loss bookkeeping, the layer-capturing block
runner). Goal: ratio <= 1.05. Prints ``RESULT reference_loop_max <worst ratio>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.harness import arguments, describe, device, interleaved, sized_config, training_steps  # noqa: E402
from mto.mae import MAE  # noqa: E402
from mto.models import patchify  # noqa: E402
from mto.simmim import SimMIM  # noqa: E402
from mto.train import Trainer  # noqa: E402


def simmim_loss(m: SimMIM, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    vit = m.encoder
    x = vit.patch_embed(images)
    w = mask.unsqueeze(-1).to(x.dtype)
    x = vit._pos_embed(x * (1 - w) + m.mask_token.to(x.dtype) * w)
    for blk in vit.blocks:
        x = blk(x)
    z = vit.norm(x)[:, vit.num_prefix_tokens:]
    b, n, d = z.shape
    pred = m.decoder(z.transpose(1, 2).reshape(b, d, m.grid, m.grid))
    pix = mask.view(b, 1, m.grid, m.grid).float()
    pix = pix.repeat_interleave(m.patch_size, 2).repeat_interleave(m.patch_size, 3)
    return (F.l1_loss(pred.float(), images, reduction="none") * pix).sum() / (pix.sum() + 1e-5) / images.shape[1]


def mae_loss(m: MAE, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    vit, dec = m.encoder, m.decoder
    b = images.shape[0]
    x = vit.patch_embed(images) + vit.pos_embed[:, 1:]
    shuffle = torch.argsort(mask.to(torch.int8), dim=1, stable=True)  # visible first
    restore = torch.argsort(shuffle, dim=1)
    keep = shuffle[:, : m.num_keep]
    x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
    x = torch.cat([(vit.cls_token + vit.pos_embed[:, :1]).expand(b, -1, -1), x], dim=1)
    for blk in vit.blocks:
        x = blk(x)
    x = dec.embed(vit.norm(x))
    tokens = torch.cat([x[:, 1:], dec.mask_token.to(x.dtype).expand(b, m.num_masked, -1)], dim=1)
    tokens = torch.gather(tokens, 1, restore[..., None].expand(-1, -1, x.shape[-1]))
    x = torch.cat([x[:, :1], tokens + dec.pos_embed.to(x.dtype)], dim=1)
    for blk in dec.blocks:
        x = blk(x)
    pred = dec.pred(dec.norm(x))[:, 1:]
    target = patchify(images, m.patch_size)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    per_patch = ((pred.float() - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum()


REFERENCE = {"simmim": simmim_loss, "mae": mae_loss}


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
        med = interleaved({"ours": training_steps(ours, args.steps),
                           "reference": training_steps(ref, args.steps, REFERENCE[method])},
                          rounds=args.rounds, dev=dev)
        ratio = med["ours"] / med["reference"]
        worst = max(worst, ratio)
        print(f"{method:8s} ours {med['ours'] / args.steps * 1e3:8.2f} ms  reference "
              f"{med['reference'] / args.steps * 1e3:8.2f} ms  ratio {ratio:.3f}")
    print(f"RESULT reference_loop_max {worst:.3f}")


if __name__ == "__main__":
    main()
