"""How a study invocation ended: the trials' final states read back from MLflow, runs left open marked
KILLED (resumable), the parent run ended, and what the command line prints and returns."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ablations.contract import FAILURE, TRIAL
from ablations.run.tracking import StudyTracker
from ablations.study import Study

JOURNAL_FILE = "pending_tracking.jsonl"  # trial writes kept while the tracking store was down


@dataclass
class StudyOutcome:
    parent_run_id: str
    tracking_uri: str
    folder: Path
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # trial name -> reason
    interrupted: bool = False
    experiment_id: str = ""
    tracking_down: int = 0  # writes kept in ``folder / JOURNAL_FILE`` because the store stopped answering
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

    When the tracking store is down, wait up to ``wait_s`` for it; if it stays down, the kept
    writes stay in the journal for ``--resume`` and the outcome says so (the runs cannot be ended)."""
    outcome = StudyOutcome(tracker.parent_id, tracker.uri, folder, experiment_id=tracker.experiment_id or "")
    deadline = time.monotonic() + wait_s
    while not tracker.flush() and time.monotonic() < deadline:
        time.sleep(2)
    if tracker.down:
        outcome.tracking_down = len(tracker.pending)
        for name, (status, reason) in tracker.ended.items():
            if status == "FINISHED":
                outcome.finished.append(name)
            else:
                outcome.failed[name] = reason or "unknown error"
        outcome.interrupted = True
        return outcome
    for run in tracker.children():
        name = run.data.tags.get(TRIAL, run.info.run_name)
        if run.info.status == "FINISHED":
            outcome.finished.append(name)
        elif run.info.status == "FAILED":
            outcome.failed[name] = run.data.tags.get(FAILURE, "unknown error")
        else:
            tracker.client.set_terminated(run.info.run_id, "KILLED")
    expected = len(study.trials) + (
        study.spec.search.num_samples * len(study.spec.search_seeds) if study.spec.search.kind == "optuna" else 0
    )
    outcome.interrupted = interrupted or len(outcome.finished) + len(outcome.failed) < expected
    tracker.end_study("KILLED" if outcome.interrupted else ("FAILED" if outcome.failed else "FINISHED"))
    return outcome
