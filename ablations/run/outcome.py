"""How a study invocation ended: the trials' final states read back from MLflow, runs left open marked
KILLED (resumable), the parent run ended, and what the command line prints and returns."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ablations.run.tracking import StudyTracker
from ablations.study import Study


@dataclass
class StudyOutcome:
    parent_run_id: str
    tracking_uri: str
    folder: Path  # the invocation's folder (``ablations.run.layout``)
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # trial name -> reason
    interrupted: bool = False
    experiment_id: str = ""
    tracking_down: int = 0  # writes kept in the invocation's journal: the store stopped taking them (busy, silent)
    terminated: bool = False  # stopped by SIGTERM (exit 143), not Ctrl-C (exit 130)


def close_study(
    tracker: StudyTracker,
    study: Study,
    folder: Path,
    interrupted: bool,
    wait_s: float = float(os.environ.get("ABLATION_TRACKING_WAIT_S", "30")),
) -> StudyOutcome:
    """Read the trials' final states back from MLflow, mark runs left open as KILLED (resumable) and
    end the parent run as FINISHED, FAILED (some trial failed) or KILLED (interrupted).

    Every kept write is made first, however long a store that takes them needs. When the tracking store is busy or
    does not answer, wait up to ``wait_s`` for it; if it stays so, the kept writes stay in the journal for
    ``--resume`` and the outcome says so (the runs cannot be ended)."""
    outcome = StudyOutcome(tracker.parent_id, tracker.uri, folder, experiment_id=tracker.experiment_id or "")
    deadline = time.monotonic() + wait_s
    while not tracker.flush(timeout=max(1.0, deadline - time.monotonic())):
        if tracker.unavailable and time.monotonic() >= deadline:
            break
        time.sleep(1 if tracker.unavailable else 0)
    down = tracker.down
    for name, (status, reason) in (tracker.ended if down else tracker.close_trials()).items():
        if status == "FINISHED":
            outcome.finished.append(name)
        else:
            outcome.failed[name] = reason or "unknown error"
    if down:
        outcome.tracking_down = tracker.kept
        outcome.interrupted = True
        return outcome
    expected = len(study.trials) + study.search_samples
    outcome.interrupted = interrupted or len(outcome.finished) + len(outcome.failed) < expected
    tracker.end_study("KILLED" if outcome.interrupted else ("FAILED" if outcome.failed else "FINISHED"))
    return outcome
