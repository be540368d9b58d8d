"""Driver-side Ray Tune callback: every trial event goes to MLflow and to the progress board.

Ray pickles its callbacks into the experiment state and unpickles them on ``--resume``. So the
callback is a thin proxy holding only a key; the live objects (the MLflow tracker, the rich board)
belong to the driver process's ``DriverSession`` registered under that key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from ray import tune

from ablations.contract import AFFINITY_FILE, EPOCH, RESUMED, RESUMED_FROM, is_logged_metric
from ablations.run.progress import TrialBoard
from ablations.run.tracking import StudyTracker
from ablations.study import Study

_EXCEPTION_LINE = re.compile(r"^(?:\w+\.)*(\w+(?:Error|Exception|Interrupt|Exit))(?::\s*(.*))?$")
SESSIONS: dict[str, DriverSession] = {}


def failure_reason(trial: Any) -> str:
    """The exception at the end of the trial's traceback, e.g. ``NonFiniteLossError: non-finite training loss ...``."""
    text = ""
    try:  # the local error file is written before callbacks run; the synced copy may come later
        if trial.error_file and os.path.isfile(trial.error_file):
            text = Path(trial.error_file).read_text()
        else:
            text = str(trial.get_error() or "")
    except Exception:  # noqa: BLE001 - an unreadable error file must not hide the failure itself
        pass
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    for line in reversed(lines):
        m = _EXCEPTION_LINE.match(line)
        if m:
            return f"{m.group(1)}: {m.group(2)}" if m.group(2) else m.group(1)
    return lines[-1] if lines else "unknown error (no traceback recorded)"


@dataclass
class DriverSession:
    """What the driver knows while a study runs: its tracker, its board, and Ray trial -> MLflow run."""

    study: Study
    tracker: StudyTracker
    board: TrialBoard
    metric: str
    run_ids: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # trial name -> reason
    names: dict[str, str] = field(default_factory=dict)  # Ray trial id -> trial name
    resumed: set[str] = field(default_factory=set)  # Ray trial ids already tagged as resumed

    def run_of(self, trial: Any) -> str:
        if trial.trial_id not in self.run_ids:
            spec = self.study.resolve(trial.config, trial.trial_id)
            self.names[trial.trial_id] = spec.name
            self.run_ids[trial.trial_id] = self.tracker.trial_run(spec)
        return self.run_ids[trial.trial_id]

    def on_start(self, trial: Any) -> None:
        self.run_of(trial)
        self.board.start(trial.trial_id, self.names[trial.trial_id])

    def on_result(self, trial: Any, result: dict) -> None:
        run_id = self.run_of(trial)
        epoch = int(result[EPOCH])
        metrics = {k: v for k, v in result.items() if is_logged_metric(k)}
        if self.tracker.log_epoch(run_id, epoch, metrics) and result.get(AFFINITY_FILE):
            self.tracker.log_affinity(run_id, result[AFFINITY_FILE])
        if RESUMED_FROM in result and trial.trial_id not in self.resumed:
            self.resumed.add(trial.trial_id)
            self.tracker.set_tag(run_id, RESUMED, str(result[RESUMED_FROM]))
        self.board.update(trial.trial_id, epoch, result.get(self.metric))

    def on_complete(self, trial: Any) -> None:
        self.tracker.end_trial(self.run_of(trial), "FINISHED")
        self.board.finish(trial.trial_id, "done")

    def on_error(self, trial: Any) -> None:
        reason = failure_reason(trial)
        self.tracker.end_trial(self.run_of(trial), "FAILED", reason)
        self.failed[self.names[trial.trial_id]] = reason
        self.board.finish(trial.trial_id, "FAILED", reason)


class StudyCallback(tune.Callback):
    """Forwards Ray Tune's trial events to the ``DriverSession`` registered under ``key``."""

    def __init__(self, key: str):
        self.key = key

    @property
    def session(self) -> DriverSession:
        return SESSIONS[self.key]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self.session.on_start(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info) -> None:
        self.session.on_result(trial, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self.session.on_complete(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self.session.on_error(trial)
