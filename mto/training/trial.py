"""One trial: pre-train a MIM model (with or without MTO) and evaluate it after every epoch.

``run_trial(config, report)`` is the whole experiment for one configuration and seed. It knows
nothing of Ray or MLflow: it calls ``report(EpochReport)`` once per epoch, so the same trial runs
under Ray Tune, in a plain loop, in a notebook or in a test. It is a unit of one
(``mto.training.unit.run_unit``): a lone trial and a fused group go through the same epoch loop.
"""

from __future__ import annotations

from typing import Any

from mto.config import TrialConfig
from mto.config.errors import NonFiniteLossError
from mto.data.datasets import ImageData
from mto.training.reports import EpochReport, Report, TrialResult
from mto.training.unit import run_unit

__all__ = ["EpochReport", "NonFiniteLossError", "Report", "TrialResult", "run_trial"]


def run_trial(
    config: TrialConfig,
    report: Report | None = None,
    *,
    resume: dict[str, Any] | None = None,
    data: ImageData | None = None,
) -> TrialResult:
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

    def one(reports: dict[int, EpochReport], failures: dict[int, Exception]) -> None:
        if failures:
            raise failures[0]
        if report is not None and reports:
            report(reports[0])

    return run_unit([config], one, resumes=[resume], data=data)[0]
