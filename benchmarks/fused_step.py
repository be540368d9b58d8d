"""Fused trials: K trials stepped as one stacked model over the same K trials stepped one by one.

    python benchmarks/fused_step.py [--trials 4] [--rounds 15] [--steps 5]

The K trials are SimMIM + MTO (L_e + L_r at 0.1) at the benchmark size (the quickstart size on a
CPU, ViT-Tiny/4 on 32x32 at batch 256 on a GPU), each with its own seed and batch. "separate"
calls each trial's ``Trainer.step`` in turn (K models, K optimisers); "fused" calls
``Unit.step`` once (one vmapped forward and backward, then K optimiser steps), timed
interleaved in one run. Prints images/s of both and ``RESULT fused_speedup <separate / fused time>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dataclasses  # noqa: E402

import torch  # noqa: E402

from benchmarks.harness import arguments, as_built, describe, device, interleaved, sized_config  # noqa: E402
from mto.config import MTOConfig  # noqa: E402
from mto.data.datasets import load_data  # noqa: E402
from mto.training.trainer import Trainer  # noqa: E402
from mto.training.unit import Unit  # noqa: E402


def main() -> None:
    args = arguments(__doc__.splitlines()[0], trials=4)
    dev = device()
    base = sized_config(mto=MTOConfig(lambda_e=0.1, lambda_r=0.1), dev=dev, smoke=args.smoke)
    configs = [dataclasses.replace(base, train=dataclasses.replace(base.train, seed=s)) for s in range(args.trials)]
    data = load_data(base.data)
    separate = [Trainer(c, data) for c in configs]
    fused = Unit(configs, data)
    b = base.train.batch_size
    batches = [t.fixed_batch(b, seed=i) for i, t in enumerate(separate)]
    schedules = [torch.tensor(t.schedule_row(0), device=dev) for t in separate]
    inputs = [(images, mask, schedule, None) for (images, mask), schedule in zip(batches, schedules)]

    def one_by_one() -> None:
        for _ in range(args.steps):
            for t, step in zip(separate, inputs):
                t.step(*step)

    def stacked() -> None:
        for _ in range(args.steps):
            fused.step(inputs)

    med = interleaved({"separate": one_by_one, "fused": stacked}, rounds=args.rounds, dev=dev)
    as_built(fused.fallback, *(t.train_step.fallback for t in separate))
    images = args.trials * b * args.steps
    print(f"device {describe(dev)}; {args.trials} trials x batch {b}, steps {fused.fallback.way}")
    for name in ("separate", "fused"):
        print(f"{name:8s} {images / med[name]:10.0f} img/s (all trials together)")
    print(f"RESULT fused_speedup {med['separate'] / med['fused']:.2f}")


if __name__ == "__main__":
    main()
