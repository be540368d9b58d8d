"""Driver-side Ray Tune callback: every trial event goes to MLflow and to the progress board.

Ray pickles its callbacks into the experiment state and unpickles them on ``--resume``. So the
callback is a thin proxy holding only a key; the live objects (the MLflow tracker, the rich board)
belong to the driver process's ``DriverSession`` registered under that key.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from ablations.contract import (
    AFFINITY_DATA,
    CHECKPOINT_FALLBACK,
    ENCODER_DATA,
    EPOCH,
    ETA,
    FINETUNE_CURVE,
    FUSED_UNIT,
    MEMBER_FAILURES,
    MEMBERS,
    NODE,
    NODE_TAG,
    PHASE,
    RESTORE_NOTE,
    RESUMED,
    RESUMED_FROM,
    STEP_FALLBACK_TAG,
    STEP_FALLBACKS,
    STEP_TAG,
    STEP_WAY,
    is_logged_metric,
)
from ablations.run.progress import TrialBoard, duration
from ablations.run.tracking import StudyTracker
from ablations.study import Study, unit_name

ETA_EVERY_S = 30.0  # the parent run's ETA tag is written at most this often
_EXCEPTION_LINE = re.compile(r"^(?:\w+\.)*(\w+(?:Error|Exception|Interrupt|Exit))(?::\s*(.*))?$")
SESSIONS: dict[str, DriverSession] = {}


def failure_reason(trial: Any) -> str:
    """The exception at the end of the trial's traceback, e.g. ``NonFiniteLossError: non-finite training loss ...``;
    for a trial whose worker was lost (Ray's ``RayActorError``: its node lost, its process killed), Ray's error class
    and what it says was lost, e.g. ``ActorUnavailableError: The actor <id> is unavailable`` (Ray's trial folder keeps
    the rest in ``error.txt``)."""
    lost = _lost_worker(trial)
    if lost:
        return lost
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


def _lost_worker(trial: Any) -> str:
    """``Class: what was lost`` of the trial's last error when it is a ``RayActorError`` (Ray keeps it pickled; its
    text file holds the message alone), else ""."""
    from ray import cloudpickle
    from ray.exceptions import RayActorError

    try:  # the local file is written before callbacks run; the synced copy may come later
        path = trial.pickled_error_file
        if path and os.path.isfile(path):
            with open(path, "rb") as f:
                err = cloudpickle.load(f)
        else:
            err = trial.get_pickled_error()
    except Exception:  # noqa: BLE001 - an unreadable error file must not hide the failure itself
        return ""
    if not isinstance(err, RayActorError):
        return ""
    said = (str(err).strip().splitlines() or [""])[0].split(": ", 1)[0]  # what was lost; how is in error.txt
    return f"{type(err).__name__}: {said}".strip()


@dataclass
class DriverSession:
    """What the driver knows while a study runs: its tracker, its board, and each Ray trial's unit (every Ray
    trial is a unit of trials, one MLflow run each; a lone trial's unit has one), by trial name."""

    study: Study
    tracker: StudyTracker
    board: TrialBoard
    metric: str
    members: dict[str, list[str]] = field(default_factory=dict)  # Ray trial id -> its unit's trial names
    failed: dict[str, str] = field(default_factory=dict)  # trial name -> reason
    ended: set[str] = field(default_factory=set)  # trial names whose run was ended
    resumed: set[str] = field(default_factory=set)  # trial names already tagged as resumed
    noted: set[str] = field(default_factory=set)  # trial names already tagged with a checkpoint fallback
    nodes: dict[str, str] = field(default_factory=dict)  # trial name -> the Ray node its runs tag says
    ways: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # trial name -> its step's way, falls
    terminated: bool = False  # the driver got SIGTERM
    names: dict[str, str] = field(default_factory=dict)  # Ray trial id -> its unit's name
    eta: tuple[float, str] = (-ETA_EVERY_S, "")  # when the ETA tag was last looked at, and what it says

    def members_of(self, trial: Any) -> list[str]:
        """The names of the Ray trial's unit, their runs opened the first time it is asked."""
        if trial.trial_id not in self.members:
            unit = self.study.unit(trial.config, trial.trial_id)
            self.names[trial.trial_id] = unit_name(unit)
            self.members[trial.trial_id] = [self.tracker.open_trial(spec) for spec in unit]
            if len(unit) > 1:
                for name in self.members[trial.trial_id]:
                    self.tracker.set_tag(name, FUSED_UNIT, unit_name(unit))
        return self.members[trial.trial_id]

    def on_start(self, trial: Any) -> None:
        self.members_of(trial)
        self.board.start(trial.trial_id, self.names[trial.trial_id])

    def on_result(self, trial: Any, result: dict) -> None:
        self.members_of(trial)
        epoch = int(result[EPOCH])
        members = result[MEMBERS]
        for name, payload in members.items():
            self._log(name, epoch, payload)
        for name, reason in (result.get(MEMBER_FAILURES) or {}).items():
            self._end(name, "FAILED", reason)
        shown = next(iter(members.values()), {}).get(self.metric)
        self.board.update(trial.trial_id, epoch, shown)
        self._tag_eta()

    def _tag_eta(self) -> None:
        """The parent run's ``ETA`` tag (the MLflow UI shows when the study will end): the board's time left at the
        pace measured so far, looked at every ``ETA_EVERY_S`` seconds at most and written when it changes."""
        now, (at, said) = time.monotonic(), self.eta
        left = self.board.time_left() if now - at >= ETA_EVERY_S else None
        if left is None:
            return
        ends = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() + left))
        text = f"about {duration(left)} left, ends about {ends}"
        self.eta = (now, text)
        if text != said:
            self.tracker.set_study_tag(ETA, text)

    def _log(self, name: str, epoch: int, payload: dict) -> None:
        metrics = {k: v for k, v in payload.items() if is_logged_metric(k)}
        logged = self.tracker.log_epoch(name, epoch, metrics, payload.get(PHASE, "train"))
        data = payload.pop(AFFINITY_DATA, None)  # popped: Ray Tune's saved state need not carry it
        if logged and data:
            self.tracker.log_affinity(name, epoch, data)
        encoder = payload.pop(ENCODER_DATA, None)  # with the last epoch's metrics: logged when they are, so once
        if logged and encoder:
            self.tracker.log_encoder(name, encoder)
        if payload.get(NODE) and self.nodes.get(name) != payload[NODE]:
            self.nodes[name] = payload[NODE]
            self.tracker.set_tag(name, NODE_TAG, payload[NODE])
        if payload.get(STEP_WAY):
            self._step_way(name, payload[STEP_WAY], tuple(payload.get(STEP_FALLBACKS) or ()))
        if logged and payload.get(FINETUNE_CURVE):
            self.tracker.log_finetune_curve(name, epoch, payload[FINETUNE_CURVE])
        if RESUMED_FROM in payload and name not in self.resumed:
            self.resumed.add(name)
            self.tracker.set_tag(name, RESUMED, str(payload[RESUMED_FROM]))
        if payload.get(RESTORE_NOTE) and name not in self.noted:
            self.noted.add(name)
            self.tracker.set_tag(name, CHECKPOINT_FALLBACK, payload[RESTORE_NOTE])
            self.board.warn(
                f"{name}: {payload[RESTORE_NOTE]}"
                + (f"; resumed from epoch {payload[RESUMED_FROM]}" if RESUMED_FROM in payload else "")
            )

    def _step_way(self, name: str, way: str, fallbacks: tuple[str, ...]) -> None:
        """Tag how the trial's steps run when it changes; one line when it fell back (each way that failed, why)."""
        before = self.ways.get(name, ("", ()))
        if before == (way, fallbacks):
            return
        self.ways[name] = (way, fallbacks)
        self.tracker.set_tag(name, STEP_TAG, way)
        if fallbacks:
            self.tracker.set_tag(name, STEP_FALLBACK_TAG, "; ".join(fallbacks))
        new = fallbacks[len(before[1]) :] if fallbacks[: len(before[1])] == before[1] else fallbacks
        if new:
            self.board.warn(f"{name}: its step now runs {way} ({'; '.join(new)})")

    def _end(self, name: str, status: str, reason: str = "") -> None:
        if name in self.ended:
            return
        self.ended.add(name)
        self.tracker.end_trial(name, status, reason or None)
        status, reason = self.tracker.ended[name]  # a run an earlier driver ended for good keeps its status
        if status == "FAILED":
            self.failed[name] = reason

    def on_complete(self, trial: Any) -> None:
        members = self.members_of(trial)
        for name in members:
            self._end(name, "FINISHED")
        if all(name in self.failed for name in members):  # a fused unit whose every member failed
            self.board.finish(trial.trial_id, "FAILED", self.failed[members[0]])
        else:
            self.board.finish(trial.trial_id, "done")

    def on_error(self, trial: Any) -> None:
        reason = failure_reason(trial)
        for name in self.members_of(trial):
            self._end(name, "FAILED", reason)
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
