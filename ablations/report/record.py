"""One study invocation as the report reads it from MLflow, once: every trial's tags, status and planned epochs
as listed, and the metric histories and affinity maps the report needs. Plain data; ``reader`` fills it,
``compute`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ablations.contract import EPOCH_METRIC
from ablations.report.formulas import Curve

HETERO_SEEDS = 3  # the heterogeneity figure averages over the first seeds of a row, up to this many; read for them


class ReportError(RuntimeError):
    """The report cannot be built (missing experiment, run, reference arm or metric)."""


@dataclass(frozen=True)
class Affinity:
    """A trial's affinity maps at one epoch: ``maps`` ``[L+1, N, N]``, masked tokens first."""

    maps: np.ndarray
    num_masked: int
    epoch: int


@dataclass
class TrialRecord:
    run_id: str
    name: str
    arm: str
    seed: int
    grid: dict[str, str]
    reference: str  # the paired reference trial's name
    reference_arm: str  # its arm
    status: str  # MLflow run status
    failure: str
    epochs: int  # planned epochs
    curve: Curve | None = None  # the target metric (test split) over evaluated epochs
    val_curve: Curve | None = None  # its validation-split counterpart: what selection reads
    steps: dict[str, int] = field(default_factory=dict)  # every metric the run logged -> the step of its latest value
    data: str = ""  # the data set (``data.name``)
    step_fallback: str = ""  # where its compiled step fell back: "<way> failed: <reason>; ..." ("": it never did)
    encoder: str = ""  # the artifact path of its logged encoder ("" when it logged none)
    written: dict[str, float | str] = field(default_factory=dict)  # what a report wrote on the run before (as listed)

    @property
    def metric_keys(self) -> list[str]:
        return sorted(self.steps)

    @property
    def running(self) -> bool:
        return self.status == "RUNNING"

    @property
    def complete(self) -> bool:
        """Finished and evaluated at its last planned epoch (ASHA-stopped trials are not)."""
        return self.status == "FINISHED" and self.curve is not None and int(self.curve[0][-1]) == self.epochs

    @property
    def group(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """(arm, grid point): the trials that differ only by seed."""
        return self.arm, tuple(sorted(self.grid.items()))

    def why_left_out(self) -> str:
        if self.status == "FAILED":
            return f"failed: {self.failure or 'unknown error'}"
        if self.status == "FINISHED" and self.curve is not None:
            return f"stopped early at epoch {int(self.curve[0][-1])} of {self.epochs}"
        if self.status == "FINISHED":
            return "finished without any evaluation of the target metric"
        if self.running:
            epoch = self.steps.get(EPOCH_METRIC)
            return (
                f"still running ({'no epoch' if epoch is None else f'epoch {epoch} of {self.epochs}'} logged when "
                "read; if its driver was stopped, resume the study with --resume)"
            )
        return f"unfinished ({self.status}); resume the study with --resume"


@dataclass
class StudyRecord:
    uri: str
    experiment: str
    parent_run_id: str
    parent_name: str
    metric: str
    fraction: float
    reference_arm: str
    report_epochs: list[int] | None = None  # the study's report_epochs (None: first, middle and last)
    trials: list[TrialRecord] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # trial names in the study's order
    curves: dict[str, dict[str, Curve]] = field(default_factory=dict)  # other metrics: metric -> run id -> curve
    affinity: dict[str, Affinity] = field(default_factory=dict)  # run id -> its latest affinity maps
    unread: str = ""  # what could not be read, and why (the report says so)
    read_at: str = ""  # when the trial runs were listed (local time)

    def by_name(self) -> dict[str, TrialRecord]:
        return {t.name: t for t in self.trials}

    def complete_in_order(self) -> list[TrialRecord]:
        """The complete trials in the study's order (then by name): the order of every table and figure."""
        rank = {n: i for i, n in enumerate(self.order)}
        return sorted((t for t in self.trials if t.complete), key=lambda t: (rank.get(t.name, len(rank)), t.name))
