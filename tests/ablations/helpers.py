"""Reading a study's runs back from a real MLflow store, driving a study in the background, and the real servers
the tests start on 127.0.0.1 (mlflow server, a gateway that forwards MLflow's public API alone, an S3-compatible
store)."""

import io
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient

from ablations.contract import REFERENCE_ARM, TARGET_FRACTION, TARGET_METRIC
from ablations.run.tracking import StudyTracker
from ablations.study import TrialSpec
from benchmarks import mlflow_server
from benchmarks.mlflow_server import free_port
from benchmarks.mlflow_server import stop as stop_server
from mto import TrialConfig


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


def pythonpath() -> str:
    """A child's PYTHONPATH: the checkout first, then this process's (where packages may come from a folder)."""
    return os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")) if p)


def start_driver(path, cwd, *args: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m ablations.run PATH --no-report ARGS`` in the background, in its own process group (for signals)."""
    env = {**os.environ, "PYTHONPATH": pythonpath(), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "ablations.run", str(path), "--no-report", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for(driver: subprocess.Popen, uri: str, ready, timeout: float = 300) -> dict:
    """Poll the store while ``driver`` runs until ``ready(children)`` holds; returns the children then."""
    deadline = time.monotonic() + timeout
    while True:
        assert driver.poll() is None and time.monotonic() < deadline, (
            driver.stdout.read() if driver.poll() else "timeout"
        )
        time.sleep(0.3)
        try:
            _, children = study_runs(uri)
        except Exception:  # noqa: BLE001 - the store or experiment may not exist yet
            continue
        if ready(children):
            return children


def serve_mlflow(backend_uri: str, port: int, artifacts: Path | None = None) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1:``port`` with one worker, once ``/health`` answers."""
    return mlflow_server.start(backend_uri, port, artifacts, workers=1)


def driver_session(folder: Path, schema: Path, epochs: int, out: io.StringIO | None = None):
    """The driver's session of the tiny study written in ``folder`` (each trial ``epochs`` long) on a real tracker
    over a copy of the empty store ``schema``, its board printing to ``out``: (study, store URI, tracker, board,
    session)."""
    from rich.console import Console

    from ablations.run.callbacks import DriverSession
    from ablations.run.progress import TrialBoard
    from ablations.study import load_study
    from tests.ablations.conftest import write_study

    shutil.copy(schema, folder / "mlflow.db")
    study = load_study(write_study(folder))
    uri = f"sqlite:///{folder}/mlflow.db"
    tracker = StudyTracker(uri, "tiny")
    tracker.start_study("tiny", "", {}, {})
    board = TrialBoard("tiny", {t.name: epochs for t in study.trials}, "eval/knn_top1", console=Console(file=out))
    return study, uri, tracker, board, DriverSession(study, tracker, board, "eval/knn_top1")


@contextmanager
def plain_http_server(folder: Path) -> Iterator[str]:
    """A plain HTTP file server on 127.0.0.1 (its /health answers 200: a file) that is neither MLflow nor Ray."""
    root = folder.parent / f"{folder.name}-www"
    root.mkdir()
    (root / "health").write_text("OK")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def answered(server: subprocess.Popen, request: urllib.request.Request, name: str, timeout: float) -> None:
    """Send ``request`` until ``server`` answers it; stop the server and fail if it exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(request, timeout=2).read()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                stop_server(server)
                raise AssertionError(f"{name} did not start") from None
            time.sleep(0.3)


@contextmanager
def public_api_gateway(upstream: str) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP gateway on 127.0.0.1 in front of ``upstream`` that forwards MLflow's public REST API (``/api/``)
    alone and answers 404 to every other path (as a gateway exposing only the public API does). Yields its URL and
    the list of the paths it refused."""
    import threading
    import urllib.error
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    refused: list[str] = []

    class Forward(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            if not self.path.startswith("/api/"):
                refused.append(self.path)
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            req = urllib.request.Request(upstream + self.path, body, headers, method=self.command)
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    status, data, kind = resp.status, resp.read(), resp.headers.get("Content-Type", "")
            except urllib.error.HTTPError as err:
                status, data, kind = err.code, err.read(), err.headers.get("Content-Type", "")
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, *args) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", refused
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def s3_server(bucket: str) -> Iterator[dict[str, str]]:
    """A real S3-compatible server (moto's ``moto_server``) on 127.0.0.1 holding an empty ``bucket``; yields the
    environment that points AWS clients (pyarrow's S3 file system, as Ray Tune uses it) at it."""
    port = free_port()
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }  # no instance metadata
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    answered(
        server, urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT"), "moto_server", timeout=60
    )  # the PUT creates the bucket
    try:
        yield env
    finally:
        stop_server(server)


def budget_study(
    uri: str, metric: str, finals: dict[str, dict[int, float]], seeds=(0, 1, 2)
) -> Iterator[tuple[StudyTracker, str, int, int, float]]:
    """A budget study written by the real tracker: every arm of ``finals`` (arm -> budget -> final) once per budget
    and seed, reference ``base``, target = its final x 1. Yields ``(tracker, trial, seed, budget, final)`` for the
    caller to log each trial's epochs; ends the trial, and the study after the last."""
    tracker = StudyTracker(uri, "budgets")
    tracker.start_study(
        "budgets",
        "",
        {"resolved_trials.json": "{}"},
        {TARGET_METRIC: metric, TARGET_FRACTION: "1.0", REFERENCE_ARM: "base"},
    )
    for arm, by_budget in finals.items():
        for budget, final in by_budget.items():
            for seed in seeds:
                cfg = TrialConfig()
                cfg.train.epochs = budget
                reference = f"base-s{seed}-epochs={budget}"
                name = tracker.open_trial(
                    TrialSpec(
                        f"{arm}-s{seed}-epochs={budget}", arm, seed, {"train.epochs": budget}, cfg, reference, "base"
                    )
                )
                yield tracker, name, seed, budget, final
                tracker.end_trial(name, "FINISHED")
    tracker.end_study("FINISHED")
