"""MLflow bookkeeping, written by the driver alone (one writer: no lost writes on SQLite).

One parent run per study invocation (``ablation.role = study``) and one nested child run per
trial (``mlflow.parentRunId``, ``ablation.role = trial``, ``ablation.arm``, ``ablation.seed``),
named after the trial. Callers name a trial by its name; its MLflow run id stays inside the tracker.
A resumed invocation reopens its parent and its children, and never logs an epoch twice. Trial writes go
through the invocation's journal (``ablations.run.journal``): kept there until the store takes them, made by its
writer thread (a trial's epochs in batches), so a slow, busy or silent store never holds the driver up; every read
of the store here waits for the writes before it. The client is created lazily and dropped when pickled.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from ablations.contract import (
    ARM,
    ENCODER_FOLDER,
    EPOCH_METRIC,
    FAILED_BEFORE,
    FAILURE,
    FINETUNE_EPOCH_METRIC,
    FINETUNE_PHASE,
    GRID_PREFIX,
    REFERENCE_OF_TRIAL,
    REFERENCE_TRIAL,
    ROLE,
    SEED,
    STUDY,
    TRIAL,
    lost_machine,
    own_failure,
    same_failure,
    sqlite_path,
)
from ablations.run.journal import Journal, Op
from ablations.run.layout import Invocation
from ablations.run.ops import make
from ablations.run.provenance import environment_tags, flatten_config
from ablations.run.store import quiet_busy_store
from ablations.study import TrialSpec

PARENT = ""  # the name the journal's writes give the study's parent run (no trial has it)
PHASE_MARKERS = {"train": EPOCH_METRIC, FINETUNE_PHASE: FINETUNE_EPOCH_METRIC}  # the metric each phase's log carries


class StudyTracker:
    """Writes one study invocation to MLflow; every trial write names its trial (``TrialSpec.name``).

    Args:
        uri: tracking URI (resolved).
        experiment: MLflow experiment name (the study's name).
        invocation: the invocation's folder: its journal keeps every write until the store takes it, and
            the files the driver attaches are written there first. None: memory and a temporary folder.
    """

    def __init__(self, uri: str, experiment: str, invocation: Invocation | None = None):
        self.uri, self.experiment, self.invocation = uri, experiment, invocation
        self.parent_id: str | None = None
        self.experiment_id: str | None = None
        self._runs: dict[str, str] = {}  # trial name -> its run id, once the run exists in the store
        self._last_epoch: dict[tuple[str, str], int] = {}  # (trial, phase) -> last epoch logged (or kept to be)
        self.journal = Journal(uri, invocation.journal if invocation else None, self._apply)  # kept until made
        self.ended: dict[str, tuple[str, str]] = {}  # trial name -> (status, reason) as this driver saw it
        self.settled: dict[str, tuple[str, str]] = {}  # trial -> (status, reason): ended for good before a resume
        self._client, self._env = None, None  # MlflowClient, environment tags
        quiet_busy_store()  # the journal says a busy store in one line

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.uri)
        return self._client

    @property
    def env(self) -> dict[str, str]:
        if self._env is None:
            self._env = environment_tags()
        return self._env

    # ---- the study's parent run ---------------------------------------------------------------
    def start_study(
        self, name: str, description: str, files: dict[str, str], target: dict[str, str], resume_id: str | None = None
    ) -> str:
        """Create the parent run (or reopen ``resume_id``) and attach the study files as artifacts."""
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            db, location = sqlite_path(self.uri), None
            if db is not None:  # keep artifacts beside the database, not in the cwd
                location = (db.parent / "mlartifacts" / self.experiment).as_uri()
            self.experiment_id = self.client.create_experiment(self.experiment, artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id
        if resume_id:
            self.parent_id = self._runs[PARENT] = resume_id
            self.client.update_run(resume_id, status="RUNNING")
            self._load_children()
            return resume_id
        tags = {ROLE: "study", STUDY: name, "mlflow.note.content": description, **target, **self.env}
        run = self.client.create_run(self.experiment_id, run_name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags)
        self.parent_id = self._runs[PARENT] = run.info.run_id
        for fname, text in files.items():
            self.client.log_text(self.parent_id, text, fname)
        return self.parent_id

    def end_study(self, status: str) -> None:
        self.flush()
        self.client.set_terminated(self.parent_id, status)

    def _load_children(self) -> None:
        for run in self._children():
            name = run.data.tags.get(TRIAL)
            if name:
                self._runs[name] = run.info.run_id
                for phase, marker in PHASE_MARKERS.items():
                    history = self.client.get_metric_history(run.info.run_id, marker)
                    self._last_epoch[(name, phase)] = max((m.step for m in history), default=-1)

    def read_settled(self) -> tuple[dict[str, str], dict[str, str]]:
        """At resume: the trials an earlier driver ended for good are settled, not run again, their runs left as
        they are: FINISHED, FAILED on their own (``own_failure``), or FAILED the same way as when they were run
        again before (``same_failure``: the reason and ``FAILED_BEFORE`` both kept), unless that way is a lost
        machine (``lost_machine``: a node lost, a worker killed, a connection lost), which never settles a trial.
        Returns (those the machine failed, which run again from their last checkpoint; those failed for good now),
        each with its reason. Runs an earlier driver could not end (killed first) are neither: Ray Tune resumes
        their trials."""
        again, for_good = {}, {}
        for run in self._children():
            name, reason = run.data.tags.get(TRIAL), run.data.tags.get(FAILURE, "")
            if not name or run.info.status not in ("FINISHED", "FAILED"):
                continue
            twice = same_failure(reason, run.data.tags.get(FAILED_BEFORE, "")) and not lost_machine(reason)
            if run.info.status == "FINISHED" or own_failure(reason) or twice:
                self.settled[name] = (run.info.status, reason)
                if twice and not own_failure(reason):
                    for_good[name] = reason
            else:
                again[name] = reason
        return again, for_good

    def close_trials(self) -> dict[str, tuple[str, str]]:
        """The trials whose runs ended, with (status, reason) as MLflow has them, in the store's order; the runs
        left open are ended KILLED (resumable) and left out."""
        self.flush()
        ended = {}
        for run in self._children():
            name = run.data.tags.get(TRIAL, run.info.run_name)
            if run.info.status == "FINISHED":
                ended[name] = ("FINISHED", "")
            elif run.info.status == "FAILED":
                ended[name] = ("FAILED", run.data.tags.get(FAILURE, "unknown error"))
            else:
                self.client.set_terminated(run.info.run_id, "KILLED")
        return ended

    def _children(self) -> list:
        """All trial runs of this study invocation."""
        return self.client.search_runs(
            [self.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_id}'", max_results=50_000
        )

    # ---- trial runs: every write is an op (ablations.run.ops), made through the journal -----------
    def open_trial(self, trial: TrialSpec) -> str:
        """Open the child run of a trial: reopened if it exists, else created with params and tags (once the
        store answers). Returns the trial's name, which names it in every other write."""
        name = trial.name
        if name not in self._runs:
            tags = {
                MLFLOW_PARENT_RUN_ID: self.parent_id,
                ROLE: "trial",
                ARM: trial.arm,
                SEED: str(trial.seed),
                TRIAL: name,
                REFERENCE_TRIAL: trial.reference,
                REFERENCE_OF_TRIAL: trial.reference_arm,
                STUDY: self.experiment,
                **{GRID_PREFIX + k: str(v) for k, v in trial.grid.items()},
                **self.env,
            }
            self._op({"op": "create", "trial": name, "tags": tags, "params": flatten_config(trial.config)})
        else:
            self._op({"op": "reopen", "trial": name})
        return name

    def run_id(self, trial: str) -> str | None:
        """The MLflow run id of trial ``trial`` once the writes before have been made; None while its run does not
        exist in the store."""
        self.flush()
        return self._runs.get(trial)

    def log_epoch(self, trial: str, epoch: int, metrics: dict[str, Any], phase: str = "train") -> bool:
        """Log one epoch's metrics (or, ``phase`` finetune, its fine-tuning result) with ``step = epoch``
        (0 = before training); one already logged is skipped (returns False). The phase's marker
        (``trial/epoch``, ``trial/finetune_epoch``) goes in the same batch: a resumed driver reads it back."""
        if epoch <= self._last_epoch.get((trial, phase), -1):
            return False
        values = {
            k: float(v)
            for k, v in {**metrics, PHASE_MARKERS[phase]: epoch}.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))
        }
        self._op(
            {
                "op": "epoch",
                "trial": trial,
                "epoch": epoch,
                "phase": phase,
                "metrics": values,
                "time": int(time.time() * 1000),
            }
        )
        self._last_epoch[(trial, phase)] = epoch
        return True

    def log_finetune_curve(self, trial: str, epoch: int, loss: list[float]) -> None:
        """Attach the fine-tuning loss per fine-tuning epoch of the fine-tuning from ``epoch``."""
        self._op({"op": "finetune_curve", "trial": trial, "epoch": epoch, "loss": loss})

    def log_affinity(self, trial: str, epoch: int, data: bytes) -> None:
        """Attach a trial's affinity maps of ``epoch`` (``.npz`` bytes from its result), written first to the
        invocation's folder so that a store that is down gets the file later."""
        where = self.invocation or Invocation(Path(tempfile.mkdtemp()))
        path = where.artifact(trial, f"affinity_e{epoch:04d}.npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self._op({"op": "artifact", "trial": trial, "path": str(path)})

    def log_encoder(self, trial: str, files: dict[str, bytes]) -> None:
        """Attach a trial's encoder (its files as bytes, from its last epoch's result) as the run's encoder folder,
        written first to the invocation's folder so that a store that is down gets it later (the copy there is
        removed once attached)."""
        where = self.invocation or Invocation(Path(tempfile.mkdtemp()))
        folder = where.artifact(trial, ENCODER_FOLDER)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / Path(name).name).write_bytes(data)
        self._op({"op": "encoder", "trial": trial, "path": str(folder)})

    def set_study_tag(self, key: str, value: str) -> None:
        """A tag on the study's parent run, kept and made like the trials' writes."""
        self._op({"op": "tag", "trial": PARENT, "key": key, "value": value})

    def set_tag(self, trial: str, key: str, value: str) -> None:
        self._op({"op": "tag", "trial": trial, "key": key, "value": value})

    def end_trial(self, trial: str, status: str, reason: str | None = None) -> None:
        if trial in self.settled:  # ended for good by an earlier driver: left as it was
            self.ended[trial] = self.settled[trial]
            return
        self.ended[trial] = (status, reason or "")
        self._op({"op": "end", "trial": trial, "status": status, "reason": reason})

    # ---- writes kept until the store takes them ------------------------------------------------
    @property
    def kept(self) -> int:
        """How many writes are kept in the journal, waiting for the store."""
        return len(self.journal)

    @property
    def down(self) -> bool:
        """Whether writes are still kept (after a ``flush``: the store is busy or does not answer)."""
        return self.kept > 0

    @property
    def unavailable(self) -> str:
        """Why the store did not take the last writes tried ("" when it did): it is busy, or does not answer."""
        return self.journal.unavailable

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for the kept writes to be made; True when none is left, False when the store is busy or does not
        answer (or ``timeout`` passed). Raises the error of a write the store refused."""
        return self.journal.flush(timeout)

    def replay(self) -> int:
        """On ``--resume``: make the writes an earlier driver kept in the journal (each epoch once, those already
        logged skipped); returns how many the journal held. Raises StoreDown when the store does not take them."""
        return self.journal.replay(self._not_logged)

    def _not_logged(self, op: Op) -> bool:
        """Whether ``op`` is still to be made: an epoch once (noted as logged, or kept to be), any other op."""
        key = (op["trial"], op.get("phase", "train"))
        if op["op"] != "epoch":
            return True
        if op["epoch"] <= self._last_epoch.get(key, -1):
            return False
        self._last_epoch[key] = op["epoch"]
        return True

    def _op(self, op: Op) -> None:
        self.journal.write(op)

    def _apply(self, group: list[Op]) -> None:
        make(self.client, self.experiment_id, self._runs, self.settled, group)
