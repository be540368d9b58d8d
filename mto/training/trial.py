"""One trial: pre-train a MIM model (with or without MTO) and evaluate it after every epoch.

``run_trial(config, report)`` is the whole experiment for one configuration and seed. It knows
nothing of Ray or MLflow: it calls ``report(EpochReport)`` once per epoch, so the same trial runs
under Ray Tune, in a plain loop, in a notebook or in a test. ``mto.training.fused`` runs several trials
as one stacked model and reports each through the same ``start_report`` / ``epoch_report``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from mto.config import TrialConfig
from mto.data.datasets import ImageData
from mto.training.finetune import finetune
from mto.training.trainer import NonFiniteLossError, Trainer

__all__ = ["EpochReport", "NonFiniteLossError", "Report", "TrialResult", "run_trial"]


@dataclass
class EpochReport:
    """What a trial reports: once before training (``epoch`` 0: evaluations only, no ``train/*``), then
    after each epoch 1..E.

    ``metrics`` uses the names listed in docs/method.md ("Logged metrics"). ``arrays`` holds the affinity maps
    (``affinity``: ``[L+1, N, N]``, masked tokens first; ``num_masked``) at ``eval.affinity_epochs``.
    ``checkpoint`` is the state to save when a checkpoint is due (pass it back as ``resume``).

    At an epoch of ``eval.finetune.at`` the epoch's report carries a checkpoint, and a second report of the
    same epoch follows with ``phase`` "finetune": the fine-tuning metrics and, in ``arrays``,
    ``finetune_loss`` (its mean training loss per fine-tuning epoch). A trial stopped while fine-tuning
    resumes from that checkpoint with the fine-tuning, no pre-training epoch trained twice.
    """

    epoch: int
    epochs: int
    metrics: dict[str, float]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    checkpoint: Optional[dict[str, Any]] = None
    phase: str = "train"  # "train": the epoch's pre-training and probes; "finetune": its fine-tuning

    def __str__(self) -> str:
        keys = ("train/loss", "eval/linear_top1", "eval/knn_top1", "finetune/top1", "perf/epoch_s")
        shown = "  ".join(f"{k}={self.metrics[k]:.4f}" for k in keys if k in self.metrics)
        return f"epoch {self.epoch}/{self.epochs}  {shown}"


@dataclass
class TrialResult:
    history: list[dict[str, float]]  # one dict of metrics per epoch, with "epoch"
    affinity: dict[int, np.ndarray]  # epoch -> [L+1, N, N]

    def curve(self, metric: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of a metric over the epochs where it was measured."""
        points = [(int(h["epoch"]), h[metric]) for h in self.history if metric in h]
        return [e for e, _ in points], [v for _, v in points]


Report = Callable[[EpochReport], None]


def start_report(trainer: Trainer) -> EpochReport:
    """Epoch 0, the untrained model: every curve starts there (evaluations only)."""
    profile, _ = trainer.layer_profile(with_affinity=False)
    metrics = {**profile, **trainer.probe()}
    trainer.history.append({"epoch": 0.0, **metrics})
    due = _finetune_due(trainer, 0)
    return EpochReport(0, trainer.cfg.train.epochs, metrics, checkpoint=trainer.state_dict() if due else None)


def _finetune_due(trainer: Trainer, epoch: int) -> bool:
    """Mark ``epoch`` for fine-tuning when ``eval.finetune.at`` names it (its report then carries a checkpoint)."""
    if epoch in trainer.finetune_epochs:
        trainer.finetune_pending = epoch
    return trainer.finetune_pending == epoch


def finetune_report(trainer: Trainer) -> EpochReport:
    """Fine-tune a copy of the encoder from the pending epoch (``mto.training.finetune``), as that epoch's second report."""
    e = trainer.finetune_pending
    metrics, curve = finetune(trainer.cfg, trainer.model.encoder, trainer.data, from_epoch=e, autocast=trainer.autocast)
    trainer.finetune_pending = None
    next(h for h in trainer.history if h["epoch"] == e).update(metrics)
    return EpochReport(e, trainer.cfg.train.epochs, metrics, {"finetune_loss": np.asarray(curve)},
                       trainer.state_dict(), phase="finetune")


def epoch_report(trainer: Trainer, metrics: dict[str, float], checkpoint: bool = False) -> EpochReport:
    """After a trained epoch (``trainer.epoch`` already advanced): heterogeneity, probes when due, a
    checkpoint when due (or when ``checkpoint``)."""
    cfg, e = trainer.cfg, trainer.epoch
    profile, arrays = trainer.layer_profile(with_affinity=e in cfg.eval.affinity_epochs)
    metrics = {**metrics, **profile}
    if e % cfg.eval.every == 0 or e == cfg.train.epochs:
        metrics.update(trainer.probe())
    trainer.history.append({"epoch": float(e), **metrics})
    due = _finetune_due(trainer, e) or checkpoint or e % cfg.train.checkpoint_every == 0 or e == cfg.train.epochs
    return EpochReport(e, cfg.train.epochs, metrics, arrays, trainer.state_dict() if due else None)


def run_trial(config: TrialConfig, report: Optional[Report] = None, *, resume: Optional[dict[str, Any]] = None,
              data: Optional[ImageData] = None) -> TrialResult:
    """Pre-train and evaluate one configuration; call ``report`` after every epoch.

    Args:
        config: the trial's settings.
        report: called with an ``EpochReport`` after each epoch (``print`` works).
        resume: a checkpoint from an earlier ``EpochReport``; training continues after its epoch
            and reproduces the uninterrupted run exactly on the CPU.
        data: an already loaded data set (else it is loaded from ``config.data``).

    Raises:
        ConfigError: a setting is invalid for this machine or data set (before any training).
        NonFiniteLossError: the loss became NaN or infinite.
    """
    trainer = Trainer(config, data)
    if resume is not None:
        trainer.load_state_dict(resume)
    affinity: dict[int, np.ndarray] = {}
    report = report or (lambda r: None)
    if not trainer.history:
        report(start_report(trainer))
    while True:
        if trainer.finetune_pending is not None:
            report(finetune_report(trainer))
        if trainer.epoch >= config.train.epochs:
            break
        metrics = trainer.train_epoch()
        trainer.epoch += 1
        r = epoch_report(trainer, metrics)
        if "affinity" in r.arrays:
            affinity[r.epoch] = r.arrays["affinity"]
        report(r)
    return TrialResult(trainer.history, affinity)
