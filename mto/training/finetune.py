"""Fine-tuning evaluation: a copy of the pre-trained encoder fine-tuned end to end on the labelled
training split and scored on the validation and test splits (the protocol MAE, SimMIM, BootMAE and
ConMIM report; the probes of ``mto.training.probes`` are its cheap proxies).

The recipe is MAE's fine-tuning recipe at small scale, from timm: AdamW over timm's layer-wise
decay groups (``create_optimizer_v2(..., layer_decay=)``), per-step warm-up and cosine, drop-path,
label smoothing (timm's losses), optional mixup / cutmix (timm's ``Mixup``) and the trial's crop and
flip on the device. The classifier is a linear head on the mean-pooled patch tokens of the normed
last block, the probes' very features (``mto.methods.base.encode_patches``).

Pre-training is untouched: the copy has its own parameters, and every draw comes from generators
seeded by (``train.seed``, pre-training epoch), with torch's and numpy's global states saved and
restored around it, so the pre-training curve is bit-identical with and without fine-tuning.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from timm.data import Mixup
from timm.layers import trunc_normal_
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2

from mto.config import TrialConfig
from mto.config.errors import ConfigError, NonFiniteLossError
from mto.data.datasets import ImageData, augment, crop_params, normalize
from mto.methods.backbone import Encoder, create_vit
from mto.objective.schedules import learning_rate
from mto.training.logged import FINETUNE_SECONDS, FINETUNE_TOP1, FINETUNE_TRAIN_LOSS, VAL_FINETUNE_TOP1
from mto.training.probes import accuracy


def classifier(encoder: Encoder, cfg: TrialConfig, num_classes: int) -> Encoder:
    """A copy of ``encoder`` with fine-tuning's drop-path and a linear head on its mean-pooled patch tokens
    (MAE's head initialisation: weights ~ N(0, 2e-5), bias 0). Every parameter is trainable."""
    model_cfg = dataclasses.replace(cfg.model, drop_path=cfg.eval.finetune.drop_path)
    vit = create_vit(
        model_cfg, img_size=cfg.data.image_size, in_chans=encoder.patch_embed.proj.in_channels, num_classes=num_classes
    )
    missing, unexpected = vit.load_state_dict(encoder.state_dict(), strict=False)
    if set(missing) != {"head.weight", "head.bias"} or unexpected:
        raise RuntimeError(f"encoder and classifier differ: missing {missing}, unexpected {unexpected}")
    trunc_normal_(vit.head.weight, std=2e-5)
    torch.nn.init.zeros_(vit.head.bias)
    return vit.to(next(encoder.parameters()).device)


def optimizer(vit: Encoder, cfg: TrialConfig) -> torch.optim.Optimizer:
    """AdamW over timm's layer-decay groups: block i of L gets ``lr_scale = layer_decay^(L - i)``; no decay on
    biases, norms, the class token and the position embedding (timm's ``no_weight_decay``)."""
    ft = cfg.eval.finetune
    return create_optimizer_v2(
        vit, "adamw", lr=0.0, weight_decay=ft.weight_decay, layer_decay=ft.layer_decay, betas=(0.9, 0.999)
    )


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's lr on every group, times the group's layer-decay scale."""
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


@contextmanager
def isolated_rng(seed: int, device: torch.device) -> Iterator[None]:
    """torch (CPU and the device) and numpy global generators seeded with ``seed`` inside, restored after:
    drop-path (torch) and timm's Mixup (numpy) draw from them, and pre-training must not see it."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(state)


def finetune(
    cfg: TrialConfig, encoder: Encoder, data: ImageData, *, from_epoch: int, autocast
) -> tuple[dict[str, float], list[float]]:
    """Fine-tune a copy of ``encoder`` (pre-trained for ``from_epoch`` epochs) and score it.

    Args:
        cfg: the trial's config (``eval.finetune``, the crop and flip of ``data``).
        data: the trial's data on its device; fine-tunes on ``train_*``, scores ``val_*`` and ``test_*``.
        autocast: the trial's autocast context (bf16 on CUDA).

    Returns:
        (metrics: ``finetune/top1`` on the test split, ``val/finetune_top1`` when there is a validation split,
        ``finetune/train_loss`` of the last epoch, ``finetune/seconds``; the mean training loss of each epoch).

    Raises:
        ConfigError: ``eval.finetune.batch_size`` above the training images.
        NonFiniteLossError: the loss became NaN or infinite.
    """
    ft, n = cfg.eval.finetune, data.train_x.shape[0]
    if ft.batch_size > n:
        raise ConfigError("eval.finetune.batch_size", ft.batch_size, f"at most the {n} training images")
    device, start = data.train_x.device, time.perf_counter()
    seed = (cfg.train.seed * 1_000_003 + 7919 * (from_epoch + 1)) % 2**63
    generator = torch.Generator().manual_seed(seed)
    steps, curve = n // ft.batch_size, []
    with isolated_rng(seed, device):
        vit = classifier(encoder, cfg, data.num_classes)
        opt = optimizer(vit, cfg)
        mix = (
            Mixup(
                mixup_alpha=ft.mixup,
                cutmix_alpha=ft.cutmix,
                label_smoothing=ft.label_smoothing,
                num_classes=data.num_classes,
            )
            if ft.mixup > 0 or ft.cutmix > 0
            else None
        )
        loss_fn = (
            SoftTargetCrossEntropy()
            if mix
            else LabelSmoothingCrossEntropy(ft.label_smoothing)
            if ft.label_smoothing > 0
            else torch.nn.CrossEntropyLoss()
        )
        peak = ft.base_lr * ft.batch_size / 256
        vit.train()
        for epoch in range(ft.epochs):
            order = torch.randperm(n, generator=generator)[: steps * ft.batch_size].to(device)
            crops = crop_params(
                steps * ft.batch_size, min_scale=cfg.data.crop_min_scale, hflip=cfg.data.hflip, generator=generator
            ).to(device)
            total = torch.zeros((), device=device)
            for step in range(steps):
                set_lr(
                    opt,
                    learning_rate(epoch * steps + step, ft.epochs * steps, ft.warmup_epochs * steps, peak, ft.min_lr),
                )
                sl = slice(step * ft.batch_size, (step + 1) * ft.batch_size)
                x = augment(normalize(data.train_x[order[sl]], data.mean, data.std), crops[sl])
                y = data.train_y[order[sl]]
                if mix:
                    x, y = mix(x, y)
                with autocast:
                    loss = loss_fn(vit(x), y)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                total += loss.detach().float()
            curve.append((total / steps).item())  # one host sync per fine-tuning epoch
            if not np.isfinite(curve[-1]):
                raise NonFiniteLossError(
                    f"non-finite fine-tuning loss {curve[-1]} at fine-tuning epoch "
                    f"{epoch + 1} of {ft.epochs} (from pre-training epoch {from_epoch})"
                )
    metrics = {FINETUNE_TOP1: top1(vit, data.test_x, data.test_y, data, autocast), FINETUNE_TRAIN_LOSS: curve[-1]}
    if data.val_x is not None:
        metrics[VAL_FINETUNE_TOP1] = top1(vit, data.val_x, data.val_y, data, autocast)
    metrics[FINETUNE_SECONDS] = time.perf_counter() - start
    return metrics, curve


@torch.no_grad()
def top1(
    vit: Encoder, images: torch.Tensor, labels: torch.Tensor, data: ImageData, autocast, chunk: int = 512
) -> float:
    """Top-1 accuracy of the fine-tuned classifier on whole (uncropped) images."""
    vit.eval()
    predicted = []
    for i in range(0, images.shape[0], chunk):
        with autocast:
            predicted.append(vit(normalize(images[i : i + chunk], data.mean, data.std)).argmax(dim=1))
    return accuracy(torch.cat(predicted), labels)
