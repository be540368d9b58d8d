"""Reading a study's runs back from a real MLflow store, and driving a study in the background."""

import os
import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient


def study_runs(uri: str, experiment: str = "tiny"):
    """(parent runs, {trial name: child run}) of an experiment."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("ablation.role") == "study"]
    children = {r.data.tags["ablation.trial"]: r for r in runs if r.data.tags.get("ablation.role") == "trial"}
    assert len(children) == sum(r.data.tags.get("ablation.role") == "trial" for r in runs), "duplicate trial runs"
    return parents, children


def steps(uri: str, run, metric: str) -> list[int]:
    return [m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, metric)]


def start_driver(path, cwd) -> subprocess.Popen:
    """``python -m ablations.run PATH --no-report`` in the background, in its own process group (for signals)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen([sys.executable, "-m", "ablations.run", str(path), "--no-report"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(driver: subprocess.Popen, uri: str, ready, timeout: float = 300) -> dict:
    """Poll the store while ``driver`` runs until ``ready(children)`` holds; returns the children then."""
    deadline = time.monotonic() + timeout
    while True:
        assert driver.poll() is None and time.monotonic() < deadline, driver.stdout.read() if driver.poll() else "timeout"
        time.sleep(0.3)
        try:
            _, children = study_runs(uri)
        except Exception:  # noqa: BLE001 - the store or experiment may not exist yet
            continue
        if ready(children):
            return children
