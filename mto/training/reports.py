"""What a trial reports (``EpochReport``) and returns (``TrialResult``): plain data, no torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mto.training.logged import FINETUNE_TOP1, KNN_TOP1, LINEAR_TOP1, TRAIN_LOSS


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
    checkpoint: dict[str, Any] | None = None
    phase: str = "train"  # "train": the epoch's pre-training and probes; "finetune": its fine-tuning
    # how the trial's steps run now ("compiled with CUDA graphs", "compiled", "eager": mto.training.fallback), and
    # each way that failed to compile or capture, "<way> failed: <reason>"
    step_way: str = ""
    step_fallbacks: tuple[str, ...] = ()

    def __str__(self) -> str:
        keys = (TRAIN_LOSS, LINEAR_TOP1, KNN_TOP1, FINETUNE_TOP1, "perf/epoch_s")
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
# A unit's report: each alive member's EpochReport, and the error of each member that failed in that epoch
# (keys: indices into the unit's configs)
UnitReport = Callable[[dict[int, EpochReport], dict[int, Exception]], None]
