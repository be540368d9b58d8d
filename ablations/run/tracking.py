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
import platform
import subprocess
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from ablations.contract import (AFFINITY_FOLDER, ARM, FAILURE, GRID_PREFIX, REFERENCE_OF_TRIAL, REFERENCE_TRIAL, ROLE,
                                EPOCH_METRIC, SEED, STUDY, TRIAL)
from ablations.study import TrialSpec, flatten
from mto.config import TrialConfig, to_dict

PACKAGES = ("torch", "timm", "numpy", "scikit-learn", "ray", "mlflow", "optuna", "pydantic")


class TrackingError(RuntimeError):
    """The tracking store cannot be used (reported before any trial starts)."""


def check_tracking(uri: str, timeout: float = 5.0) -> None:
    """Raise TrackingError unless the store is reachable (an HTTP server answers /health, a DB folder exists)."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
                if resp.status != 200:
                    raise TrackingError(f"tracking server {uri} answered HTTP {resp.status} on /health")
        except (urllib.error.URLError, OSError) as err:
            raise TrackingError(f"tracking server {uri} is unreachable ({getattr(err, 'reason', err)}); "
                                "start it (mlflow server ...) or pass another --tracking-uri") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(f"the folder of the SQLite store {uri} does not exist or is not writable")


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"


def code_version() -> str:
    """``git describe`` of the project (``-dirty`` when it has uncommitted changes), else the package version."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return metadata.version("mto-ablations")


def environment_tags() -> dict[str, str]:
    tags = {"code.version": code_version(), "versions.python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            tags[f"versions.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return tags


def flatten_config(cfg: TrialConfig) -> dict[str, str]:
    """The resolved config as MLflow params by dot path (``mto.lambda_e`` -> ``"0.1"``)."""
    return {k: str(v) for k, v in flatten(to_dict(cfg)).items()}


class StudyTracker:
    """Writes one study invocation to MLflow.

    Args:
        uri: tracking URI (resolved).
        experiment: MLflow experiment name (the study's name).
    """

    def __init__(self, uri: str, experiment: str):
        self.uri, self.experiment = uri, experiment
        self.parent_id: Optional[str] = None
        self.experiment_id: Optional[str] = None
        self._runs: dict[str, str] = {}  # trial name -> run id
        self._last_epoch: dict[str, int] = {}  # run id -> last epoch logged
        self._client: Optional[MlflowClient] = None
        self._env: Optional[dict[str, str]] = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        return state

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
    def start_study(self, name: str, description: str, files: dict[str, str], target: dict[str, str],
                    resume_id: Optional[str] = None) -> str:
        """Create the parent run (or reopen ``resume_id``) and attach the study files as artifacts."""
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            location = None
            if self.uri.startswith("sqlite:///"):  # keep artifacts beside the database, not in the cwd
                location = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts" / self.experiment).as_uri()
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
                history = self.client.get_metric_history(run.info.run_id, EPOCH_METRIC)
                self._last_epoch[run.info.run_id] = max((m.step for m in history), default=-1)

    def children(self) -> list:
        """All trial runs of this study invocation."""
        return self.client.search_runs([self.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_id}'",
                                       max_results=50_000)

    # ---- trial runs ---------------------------------------------------------------------------
    def trial_run(self, trial: TrialSpec) -> str:
        """The child run of a trial: reopened if it exists, else created with params and tags."""
        name = trial.name
        if name in self._runs:
            run_id = self._runs[name]
            if self.client.get_run(run_id).info.status != "FINISHED":
                self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {MLFLOW_PARENT_RUN_ID: self.parent_id, ROLE: "trial", ARM: trial.arm, SEED: str(trial.seed),
                TRIAL: name, REFERENCE_TRIAL: trial.reference, REFERENCE_OF_TRIAL: trial.reference_arm, STUDY: self.experiment,
                **{GRID_PREFIX + k: str(v) for k, v in trial.grid.items()}, **self.env}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        params = [Param(k, v[:6000]) for k, v in flatten_config(trial.config).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[i:i + 100])
        self._runs[name] = run_id
        self._last_epoch[run_id] = -1  # nothing logged yet: epoch 0 (before training) comes first
        return run_id

    def log_epoch(self, run_id: str, epoch: int, metrics: dict[str, Any]) -> bool:
        """Log one epoch's metrics with ``step = epoch`` (0 = before training); an epoch already logged is
        skipped (returns False). ``trial/epoch`` goes in the same batch: a resumed driver reads it back."""
        if epoch <= self._last_epoch.get(run_id, -1):
            return False
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, epoch) for k, v in {**metrics, EPOCH_METRIC: epoch}.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[i:i + 1000])
        self._last_epoch[run_id] = epoch
        return True

    def log_affinity(self, run_id: str, path: str) -> None:
        """Attach a trial's affinity maps (an ``.npz`` its worker wrote)."""
        self.client.log_artifact(run_id, path, AFFINITY_FOLDER)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def end_trial(self, run_id: str, status: str, reason: Optional[str] = None) -> None:
        if reason:
            self.client.log_batch(run_id, tags=[RunTag(FAILURE, reason[:5000])])
        self.client.set_terminated(run_id, status)


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)  # insertion order: trials stay in the study's order
