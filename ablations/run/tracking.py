"""MLflow bookkeeping, written by the driver alone (one writer: no lost writes on SQLite).

One parent run per study invocation (``ablation.role = study``) and one nested child run per
trial (``mlflow.parentRunId``, ``ablation.role = trial``, ``ablation.arm``, ``ablation.seed``),
named after the trial. A resumed invocation reopens its parent and its children, and never logs
an epoch twice. The client is created lazily and dropped when pickled, because Ray Tune pickles
its callbacks into the experiment state.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from ablations.contract import (
    AFFINITY_FOLDER,
    ARM,
    EPOCH_METRIC,
    FAILED_BEFORE,
    FAILURE,
    FINETUNE_EPOCH_METRIC,
    FINETUNE_FOLDER,
    FINETUNE_PHASE,
    GRID_PREFIX,
    REFERENCE_OF_TRIAL,
    REFERENCE_TRIAL,
    ROLE,
    SEED,
    STUDY,
    TRIAL,
    own_failure,
    same_failure,
)
from ablations.run.files import safe_name
from ablations.run.provenance import environment_tags, flatten_config
from ablations.run.store import TrackingError, experiment_url, store_answers, ui_command  # noqa: F401 - re-exported
from ablations.study import TrialSpec

PHASE_MARKERS = {"train": EPOCH_METRIC, FINETUNE_PHASE: FINETUNE_EPOCH_METRIC}  # the metric each phase's log carries


class StudyTracker:
    """Writes one study invocation to MLflow.

    Args:
        uri: tracking URI (resolved).
        experiment: MLflow experiment name (the study's name).
    """

    def __init__(self, uri: str, experiment: str):
        self.uri, self.experiment = uri, experiment
        self.parent_id: str | None = None
        self.experiment_id: str | None = None
        self._runs: dict[str, str] = {}  # trial name -> run id
        self._last_epoch: dict[tuple[str, str], int] = {}  # (trial, phase) -> last epoch logged (or kept to be)
        self.pending: list[dict[str, Any]] = []  # writes kept while the store is down, in order
        self.ended: dict[str, tuple[str, str]] = {}  # trial name -> (status, reason) as this driver saw it
        self.settled: dict[str, tuple[str, str]] = {}  # trial -> (status, reason): ended for good before a resume
        self._tried, self._client, self._env = 0.0, None, None  # last retry time, MlflowClient, environment tags

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
            location = None
            if self.uri.startswith("sqlite:///"):  # keep artifacts beside the database, not in the cwd
                location = (Path(self.uri[len("sqlite:///") :]).parent / "mlartifacts" / self.experiment).as_uri()
            self.experiment_id = self.client.create_experiment(self.experiment, artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id
        if resume_id:
            self.parent_id = resume_id
            self.client.update_run(resume_id, status="RUNNING")
            self._load_children()
            return resume_id
        tags = {ROLE: "study", STUDY: name, "mlflow.note.content": description, **target, **self.env}
        run = self.client.create_run(self.experiment_id, run_name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags)
        self.parent_id = run.info.run_id
        for fname, text in files.items():
            self.client.log_text(self.parent_id, text, fname)
        return self.parent_id

    def end_study(self, status: str) -> None:
        self.client.set_terminated(self.parent_id, status)

    def _load_children(self) -> None:
        for run in self.children():
            name = run.data.tags.get(TRIAL)
            if name:
                self._runs[name] = run.info.run_id
                for phase, marker in PHASE_MARKERS.items():
                    history = self.client.get_metric_history(run.info.run_id, marker)
                    self._last_epoch[(name, phase)] = max((m.step for m in history), default=-1)

    def read_settled(self) -> tuple[dict[str, str], dict[str, str]]:
        """At resume: the trials an earlier driver ended for good are settled, not run again, their runs left as
        they are: FINISHED, FAILED on their own (``own_failure``), or FAILED the same way as when they were run
        again before (``same_failure``: the reason and ``FAILED_BEFORE`` both kept). Returns (those the machine
        failed once, which run again from their last checkpoint; those failed for good now), each with its reason.
        Runs an earlier driver could not end (killed first) are neither: Ray Tune resumes their trials."""
        again, for_good = {}, {}
        for run in self.children():
            name, reason = run.data.tags.get(TRIAL), run.data.tags.get(FAILURE, "")
            if not name or run.info.status not in ("FINISHED", "FAILED"):
                continue
            twice = same_failure(reason, run.data.tags.get(FAILED_BEFORE, ""))
            if run.info.status == "FINISHED" or own_failure(reason) or twice:
                self.settled[name] = (run.info.status, reason)
                if twice and not own_failure(reason):
                    for_good[name] = reason
            else:
                again[name] = reason
        return again, for_good

    def children(self) -> list:
        """All trial runs of this study invocation."""
        return self.client.search_runs(
            [self.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_id}'", max_results=50_000
        )

    # ---- trial runs ---------------------------------------------------------------------------
    # Every trial write is an op (a JSON-able dict naming its trial). While the store answers, an
    # op is made at once. When a write fails and the store does not answer, the op and every later
    # one are kept, in order, in memory and in ``journal`` (so a killed driver keeps them too);
    # they are written when the store answers again, at the end of the study, or by ``--resume``.
    journal: Path | None = None
    RETRY_S = 15.0  # between attempts to reach a store that is down

    def trial_run(self, trial: TrialSpec) -> str:
        """The child run of a trial: reopened if it exists, else created with params and tags.

        Returns its run id, or ``pending:<trial name>`` while the store is down."""
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
        return self._runs.get(name, PENDING + name)

    def log_epoch(self, run_id: str, epoch: int, metrics: dict[str, Any], phase: str = "train") -> bool:
        """Log one epoch's metrics (or, ``phase`` finetune, its fine-tuning result) with ``step = epoch``
        (0 = before training); one already logged is skipped (returns False). The phase's marker
        (``trial/epoch``, ``trial/finetune_epoch``) goes in the same batch: a resumed driver reads it back."""
        name = self._name(run_id)
        if epoch <= self._last_epoch.get((name, phase), -1):
            return False
        values = {
            k: float(v)
            for k, v in {**metrics, PHASE_MARKERS[phase]: epoch}.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))
        }
        self._op(
            {
                "op": "epoch",
                "trial": name,
                "epoch": epoch,
                "phase": phase,
                "metrics": values,
                "time": int(time.time() * 1000),
            }
        )
        self._last_epoch[(name, phase)] = epoch
        return True

    def log_finetune_curve(self, run_id: str, epoch: int, loss: list[float]) -> None:
        """Attach the fine-tuning loss per fine-tuning epoch of the fine-tuning from ``epoch``."""
        self._op({"op": "finetune_curve", "trial": self._name(run_id), "epoch": epoch, "loss": loss})

    def log_affinity(self, run_id: str, epoch: int, data: bytes) -> None:
        """Attach a trial's affinity maps of ``epoch`` (``.npz`` bytes from its result), written first to the
        driver's own folder (beside the journal) so that a store that is down gets the file later."""
        folder = (self.journal.parent if self.journal else Path(tempfile.mkdtemp())) / "artifacts"
        path = folder / safe_name(self._name(run_id)) / f"affinity_e{epoch:04d}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self._op({"op": "artifact", "trial": self._name(run_id), "path": str(path)})

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self._op({"op": "tag", "trial": self._name(run_id), "key": key, "value": value})

    def end_trial(self, run_id: str, status: str, reason: str | None = None) -> None:
        if self._name(run_id) in self.settled:  # ended for good by an earlier driver: left as it was
            self.ended[self._name(run_id)] = self.settled[self._name(run_id)]
            return
        self.ended[self._name(run_id)] = (status, reason or "")
        self._op({"op": "end", "trial": self._name(run_id), "status": status, "reason": reason})

    # ---- writes kept while the store is down ----------------------------------------------------
    @property
    def down(self) -> bool:
        return bool(self.pending)

    def _name(self, run_id: str) -> str:
        if run_id.startswith(PENDING):
            return run_id[len(PENDING) :]
        return next(n for n, r in self._runs.items() if r == run_id)

    def _op(self, op: dict[str, Any]) -> None:
        if self.pending:
            self._keep(op)
            if time.monotonic() - self._tried >= self.RETRY_S:
                self.flush()
            return
        try:
            self._apply(op)
        except Exception as err:  # noqa: BLE001 - a store that still answers re-raises below
            if store_answers(self.uri):
                raise
            self._keep(op)
            self._tried = time.monotonic()
            _warn(
                f"tracking store {self.uri} does not answer ({type(err).__name__}); the trials go on and their "
                f"results are kept{f' in {self.journal}' if self.journal else ''} until it is back"
            )

    def _keep(self, op: dict[str, Any]) -> None:
        self.pending.append(op)
        if self.journal is not None:
            with open(self.journal, "a") as f:
                f.write(json.dumps(op) + "\n")

    def flush(self) -> bool:
        """Write the kept ops if the store answers; True when none is left."""
        self._tried = time.monotonic()
        if not self.pending:
            return True
        if not store_answers(self.uri):
            return False
        done = 0
        try:
            for op in self.pending:
                self._apply(op)
                done += 1
        except Exception:  # noqa: BLE001 - down again: keep the rest
            pass
        self.pending = self.pending[done:]
        if self.journal is not None:
            self.journal.write_text("".join(json.dumps(op) + "\n" for op in self.pending))
        if not self.pending:
            _warn(f"tracking store {self.uri} answers again: {done} kept writes made")
        return not self.pending

    def replay(self, journal: Path) -> int:
        """On ``--resume``: write the ops an earlier driver kept in ``journal`` (then empty it); returns their count."""
        self.journal = journal
        if not journal.is_file():
            return 0
        ops = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
        self.pending = []
        for op in ops:
            key = (op["trial"], op.get("phase", "train"))
            if op["op"] == "epoch" and op["epoch"] <= self._last_epoch.get(key, -1):
                continue
            self.pending.append(op)
            if op["op"] == "epoch":
                self._last_epoch[key] = max(op["epoch"], self._last_epoch.get(key, -1))
        self.flush()
        if self.pending:
            raise TrackingError(
                f"tracking store {self.uri} does not take the {len(self.pending)} kept writes in {journal}"
            )
        return len(ops)

    def _apply(self, op: dict[str, Any]) -> None:
        """Make one op in the store (idempotent: a run is created once, an epoch logged once)."""
        name, kind = op["trial"], op["op"]
        if kind == "create":
            if name not in self._runs:
                run_id = self.client.create_run(self.experiment_id, run_name=name, tags=op["tags"]).info.run_id
                params = [Param(k, v[:6000]) for k, v in op["params"].items()]
                for i in range(0, len(params), 100):
                    self.client.log_batch(run_id, params=params[i : i + 100])
                self._runs[name] = run_id
            return
        run_id = self._runs[name]
        if kind == "reopen":
            run = self.client.get_run(run_id)
            if run.info.status == "FAILED" and name not in self.settled:  # runs again: the old reason is history
                self.client.set_tag(run_id, FAILED_BEFORE, run.data.tags.get(FAILURE, "")[:5000])
                self.client.delete_tag(run_id, FAILURE)
            if run.info.status != "FINISHED" and name not in self.settled:
                self.client.update_run(run_id, status="RUNNING")
        elif kind == "epoch":
            batch = [Metric(k, v, op["time"], op["epoch"]) for k, v in op["metrics"].items()]
            for i in range(0, len(batch), 1000):
                self.client.log_batch(run_id, metrics=batch[i : i + 1000])
        elif kind == "artifact":
            if os.path.isfile(op["path"]):
                self.client.log_artifact(run_id, op["path"], AFFINITY_FOLDER)
        elif kind == "finetune_curve":
            self.client.log_dict(
                run_id, {"epoch": op["epoch"], "loss": op["loss"]}, f"{FINETUNE_FOLDER}/loss_e{op['epoch']:04d}.json"
            )
        elif kind == "tag":
            self.client.set_tag(run_id, op["key"], op["value"])
        elif kind == "end":
            if op["status"] != "FINISHED" and self.client.get_run(run_id).info.status == "FINISHED":
                return  # a finished trial stays finished, whatever happens to its Ray trial later
            if op["reason"]:
                self.client.log_batch(run_id, tags=[RunTag(FAILURE, op["reason"][:5000])])
            self.client.set_terminated(run_id, op["status"])


PENDING = "pending:"  # the run id handed out for a trial whose run could not be created yet


def _warn(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[yellow]{escape(message)}[/]", highlight=False, soft_wrap=True)
