"""Shared timing harness for the benchmarks: ratios of things measured in one run.

These machines are shared and noisy, so every figure is a ratio of two measurements taken in
the same process, interleaved round by round (A B A B ...), each the median of several rounds.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mto.config import DataConfig, MIMConfig, ModelConfig, MTOConfig, TrainConfig, TrialConfig
from mto.methods import registry


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process a benchmark starts: this one's, with the checkout first on PYTHONPATH
    (the caller's PYTHONPATH kept after it), plus ``extra``."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def describe(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name()}"
    return f"cpu: {torch.get_num_threads()} threads"


def sized_config(
    method: str = registry.DEFAULT,
    mto: MTOConfig | None = None,
    dev: torch.device | None = None,
    smoke: bool = False,
    **mim,
) -> TrialConfig:
    """The quickstart size on a CPU (tiny ViT, 16x16 digits, patch 2); ViT-Tiny/4 on 32x32 on a GPU; with ``smoke``,
    the smallest (a 2-block ViT of width 32 on 64 digits, batch 32), to check that a benchmark runs."""
    dev = dev or device()
    mim_cfg = MIMConfig(method=method, **mim)
    if smoke:
        return TrialConfig(
            data=DataConfig(max_train=64),
            model=ModelConfig(embed_dim=32, depth=2, num_heads=2),
            mim=mim_cfg,
            mto=mto or MTOConfig(),
            train=TrainConfig(batch_size=32),
        )
    if dev.type == "cuda":
        return TrialConfig(
            data=DataConfig(image_size=32),
            model=ModelConfig(preset="vit_tiny", patch_size=4),
            mim=mim_cfg,
            mto=mto or MTOConfig(),
            train=TrainConfig(batch_size=256),
        )
    return TrialConfig(mim=mim_cfg, mto=mto or MTOConfig(), train=TrainConfig(batch_size=128))


def as_built(*fallbacks) -> None:
    """Stop the benchmark when a step it measures fell back (``mto.training.fallback``: a compile or capture
    failure, after which the trial trains on another way): its figure would not be of the step it names."""
    for f in fallbacks:
        if f.failures:
            raise SystemExit(f"a step fell back, so no figure of it: it ran {f.describe()}")


def as_built_report(report) -> None:
    """A ``run_trial`` report that stops the benchmark when the trial's step fell back (``as_built``)."""
    if report.step_fallbacks:
        raise SystemExit(f"a step fell back, so no figure of it: {'; '.join(report.step_fallbacks)}")


def training_steps(trainer, steps: int, step=None) -> Callable[[], None]:
    """A closure running ``steps`` optimisation steps of ``trainer`` on one fixed batch at the current schedule
    row; ``step`` (a ``TrainStep`` over the trainer's model and optimiser) replaces the trainer's own (for
    hand-written references). It stops the benchmark when the step fell back (``as_built``)."""
    images, mask = trainer.fixed_batch(trainer.cfg.train.batch_size)
    schedule = torch.tensor(trainer.schedule_row(0), device=trainer.device)
    draws = trainer.model.step_draws(0, 1, images.shape[0])
    draws = None if draws is None else draws[0].to(trainer.device)
    step = step or trainer.train_step

    def run() -> None:
        for _ in range(steps):
            step(images, mask, schedule, draws)
        as_built(step.fallback)

    return run


def interleaved(candidates: dict[str, Callable[[], None]], *, rounds: int, dev: torch.device) -> dict[str, float]:
    """Median seconds per call of each candidate, timed in shuffled order round after round."""
    times: dict[str, list[float]] = {k: [] for k in candidates}
    order = list(candidates)
    rng = random.Random(0)
    for fn in candidates.values():  # warm-up (allocator, kernels, caches)
        fn()
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            sync(dev)
            start = time.perf_counter()
            candidates[name]()
            sync(dev)
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def arguments(description: str, trials: int | None = None, methods: bool = False) -> argparse.Namespace:
    """--rounds, --steps, --threads, --smoke (and --trials when ``trials`` gives its default, --methods with
    ``methods``)."""
    p = argparse.ArgumentParser(description=description)
    if trials is not None:
        p.add_argument("--trials", type=int, default=trials, help="trials stepped together")
    if methods:
        p.add_argument("--methods", type=lambda v: v.split(","), default=None, help="comma-separated (default: all)")
    p.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (median taken)")
    p.add_argument("--steps", type=int, default=5, help="training steps per timed call")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--smoke", action="store_true", help="smallest size, one round of one step: checks that it runs")
    args = p.parse_args()
    if args.smoke:
        args.rounds, args.steps = 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    return args
