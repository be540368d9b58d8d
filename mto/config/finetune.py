"""Settings of the fine-tuning evaluation (``eval.finetune``): the MAE / SimMIM fine-tuning recipe at
small scale. Torch-free, like every config module, so a study validates in a fraction of a second.

The authors fine-tune ViT-B for 100 epochs (MAE: batch 1024, base lr 5e-4, layer decay 0.65, weight
decay 0.05, drop-path 0.1, label smoothing 0.1, mixup 0.8, cutmix 1.0, 5 warm-up epochs; SimMIM: base
lr 5e-3 at batch 2048, layer decay 0.65, 20 warm-up epochs, the same regularisation). For a 4- or 12-block
ViT-Tiny on CIFAR-10 fine-tuned for 20 epochs after every budget, the defaults keep their optimiser,
schedule, weight decay, drop-path and label smoothing, decay less per layer (0.75: fewer blocks), and
leave mixup and cutmix off (they pay off over long schedules; turn them on with their alphas).
"""

from __future__ import annotations

from dataclasses import dataclass

from mto.config.errors import check as _check
from mto.config.limits import MAX_BATCH, MAX_EPOCHS, MAX_FINETUNE_EPOCHS, bounded


@dataclass
class FinetuneConfig:
    """End-to-end fine-tuning of a copy of the pre-trained encoder, at chosen pre-training epochs."""

    __pydantic_config__ = {"extra": "forbid"}
    enabled: bool = False
    at: list[int] | None = None  # pre-training epochs to fine-tune from (0 = the untrained model); None: the last
    epochs: int = 20
    batch_size: int = 128
    base_lr: float = 1e-3  # peak lr = base_lr * batch_size / 256, reached after warmup_epochs
    min_lr: float = 1e-6
    layer_decay: float = 0.75  # block i (0-based) of L gets lr x layer_decay^(L - i); the head x 1 (timm's groups)
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    drop_path: float = 0.1
    mixup: float = 0.0  # Mixup's Beta alpha (timm's Mixup); 0 = off
    cutmix: float = 0.0  # CutMix's Beta alpha; 0 = off

    def __post_init__(self) -> None:
        at = self.at
        _check(
            at is None or (len(at) > 0 and len(set(at)) == len(at) and all(0 <= e <= MAX_EPOCHS for e in at)),
            "eval.finetune.at",
            at,
            f"distinct pre-training epochs from 0 (the untrained model) to {MAX_EPOCHS:,}, or null for the last epoch",
        )
        _check(
            1 <= self.epochs <= MAX_FINETUNE_EPOCHS,
            "eval.finetune.epochs",
            self.epochs,
            bounded(1, MAX_FINETUNE_EPOCHS),
        )
        _check(
            2 <= self.batch_size <= MAX_BATCH and self.batch_size % 2 == 0,
            "eval.finetune.batch_size",
            self.batch_size,
            f"an even integer from 2 to {MAX_BATCH:,} (mixup pairs each image with another of its batch)",
        )
        _check(self.base_lr > 0, "eval.finetune.base_lr", self.base_lr, "a number > 0")
        _check(self.min_lr >= 0, "eval.finetune.min_lr", self.min_lr, "a number >= 0")
        _check(0 < self.layer_decay <= 1, "eval.finetune.layer_decay", self.layer_decay, "a number in (0, 1]")
        _check(self.weight_decay >= 0, "eval.finetune.weight_decay", self.weight_decay, "a number >= 0")
        _check(
            0 <= self.warmup_epochs < self.epochs,
            "eval.finetune.warmup_epochs",
            self.warmup_epochs,
            f"an integer in [0, eval.finetune.epochs={self.epochs})",
        )
        _check(
            0 <= self.label_smoothing < 1, "eval.finetune.label_smoothing", self.label_smoothing, "a number in [0, 1)"
        )
        _check(0 <= self.drop_path < 1, "eval.finetune.drop_path", self.drop_path, "a number in [0, 1)")
        for name in ("mixup", "cutmix"):
            _check(
                getattr(self, name) >= 0, f"eval.finetune.{name}", getattr(self, name), "a Beta alpha >= 0 (0 = off)"
            )

    def epochs_for(self, pretrain_epochs: int) -> list[int]:
        """The pre-training epochs fine-tuned from (none when off); raises ConfigError for one outside training."""
        if not self.enabled:
            return []
        at = self.at if self.at is not None else [pretrain_epochs]
        outside = [e for e in at if e > pretrain_epochs]
        _check(
            not outside,
            "eval.finetune.at",
            self.at,
            f"epochs 0 to train.epochs={pretrain_epochs} ({outside} lie outside the training)",
        )
        return sorted(at)
