"""What ``eval.finetune`` adds to a study's time: fine-tuning epochs against pre-training epochs of the same
model, data and batch size, timed interleaved in one process.

    python benchmarks/finetune_cost.py [--epochs 2] [--rounds 5]

One pre-training epoch is ``Unit.train_epoch`` (a unit of one trial) (SimMIM + MTO, the benchmark size of
``benchmarks/harness.py``); fine-tuning is ``mto.training.finetune.finetune`` for ``--epochs`` epochs from the
same encoder (its classifier copy, layer-decay AdamW, augmentation, and the two scoring passes included).
``RESULT finetune_epoch_per_pretrain_epoch <ratio>``: a fine-tuning from one budget costs about
``ratio x eval.finetune.epochs`` pre-training epochs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import describe, device, interleaved, sized_config  # noqa: E402
from mto.config import EvalConfig, MTOConfig  # noqa: E402
from mto.config.finetune import FinetuneConfig  # noqa: E402
from mto.training.finetune import finetune  # noqa: E402
from mto.training.unit import Unit  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per timed call")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="smallest size, one round of one epoch: checks that it runs")
    args = p.parse_args()
    if args.smoke:
        args.epochs, args.rounds = 1, 1
    dev = device()
    cfg = sized_config(mto=MTOConfig(lambda_e=0.1, lambda_r=0.1), dev=dev, smoke=args.smoke)
    ft = FinetuneConfig(enabled=True, epochs=args.epochs, warmup_epochs=0, batch_size=cfg.train.batch_size)
    cfg = dataclasses.replace(cfg, eval=EvalConfig(linear=False, knn=False, hetero_batch=16, finetune=ft))
    unit = Unit([cfg])
    trainer = unit.trainers[0]

    def pretrain() -> None:
        for _ in range(args.epochs):
            unit.train_epoch()

    def tune() -> None:
        finetune(cfg, trainer.model.encoder, trainer.data, from_epoch=0, autocast=trainer.autocast)

    times = interleaved({"pretrain": pretrain, "finetune": tune}, rounds=args.rounds, dev=dev)
    images = trainer.steps_per_epoch * cfg.train.batch_size
    print(f"{describe(dev)}; {images} images per epoch, batch {cfg.train.batch_size}, {args.epochs} epochs per call")
    print(
        f"pre-training: {times['pretrain'] / args.epochs:.2f} s per epoch; "
        f"fine-tuning: {times['finetune'] / args.epochs:.2f} s per epoch"
    )
    print(f"RESULT finetune_epoch_per_pretrain_epoch {times['finetune'] / times['pretrain']:.2f}")


if __name__ == "__main__":
    main()
