"""Reading a study's runs back from a real MLflow store, and driving a study in the background."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional

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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_mlflow(backend_uri: str, port: int, artifacts: Optional[Path] = None) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1:``port`` in its own process group, once ``/health`` answers. MLflow's job
    runner (huey consumers, which a stopped server leaves running) is off: tracking does not use it."""
    args = ["--artifacts-destination", str(artifacts)] if artifacts else []
    server = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
                               "--port", str(port), "--backend-store-uri", backend_uri, "--workers", "1", *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                              env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                stop_mlflow(server)
                raise AssertionError("mlflow server did not start")
            time.sleep(0.5)


def stop_mlflow(server: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop the server and every process it started (``signal.SIGKILL``: as a crash would)."""
    try:
        os.killpg(server.pid, sig)
    except ProcessLookupError:
        pass
    server.wait(timeout=30)
