"""A study on a real ``mlflow server``, which is killed mid-study: the driver says so at once, keeps every
write, ends with exit 3 and the resume command; once the server is back, ``--resume`` writes what was kept
(each epoch once, the trials' encoders) and closes the runs, and the REST API (what the UI shows) serves them all."""

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.ablations.conftest import TINY_BASE, run_cli, write_study
from tests.ablations.helpers import free_port as _free_port
from tests.ablations.helpers import serve_mlflow, start_driver, stop_server
from tests.ablations.report.test_mlflow_server import _api

pytestmark = pytest.mark.slow


def _serve(folder: Path, port: int) -> subprocess.Popen:
    return serve_mlflow(f"sqlite:///{folder}/server.db", port, folder / "artifacts")


def _kill(server: subprocess.Popen) -> None:
    stop_server(server, signal.SIGKILL)  # the server and its uvicorn workers, as a crash would


def _runs(base: str) -> dict:
    exp = _api(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=tiny")["experiment"]
    runs = _api(base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})
    return {next(t["value"] for t in r["data"]["tags"] if t["key"] == "mlflow.runName"): r for r in runs["runs"]}


def test_server_killed_mid_study_loses_nothing_and_resume_writes_it(tmp_path):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _serve(tmp_path, port)
    study = write_study(
        tmp_path,
        base={**TINY_BASE, "train": {**TINY_BASE["train"], "epochs": 6}},
        tracking={"uri": base},
        max_concurrent=2,
    )
    env = {"ABLATION_TRACKING_WAIT_S": "3"}
    driver = start_driver(study, tmp_path, env=env)
    try:
        deadline = time.monotonic() + 400
        while True:  # kill the server once the first epoch of a trial is in
            assert driver.poll() is None and time.monotonic() < deadline, "the study ended before epoch 1"
            try:
                runs = _runs(base)
                if any(
                    _api(
                        base, f"/api/2.0/mlflow/metrics/get-history?run_id={r['info']['run_id']}&metric_key=train/loss"
                    )["metrics"]
                    for r in runs.values()
                ):
                    break
            except Exception:  # noqa: BLE001 - the experiment may not exist yet
                pass
            time.sleep(1)
        _kill(server)
        err = driver.communicate(timeout=600)[0]  # its stdout and stderr
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 3, err[-3000:]
    assert "does not answer" in err and "stopped taking writes" in err and "--resume" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    journals = list(tmp_path.glob("ray/tiny/*/pending_tracking.jsonl"))
    assert journals and journals[0].read_text().strip()

    server = _serve(tmp_path, port)
    try:
        proc = run_cli(str(study), "--no-report", "--resume", cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (
            f"open {base}/#/experiments/" in proc.stderr and "workflowType=machine_learning in a browser" in proc.stderr
        )
        runs = _runs(base)
        trials = {n: r for n, r in runs.items() if n in ("simmim-s0", "mto-s0")}
        assert sorted(trials) == ["mto-s0", "simmim-s0"] and len(runs) == 3  # one parent, each trial once
        parent = next(r for n, r in runs.items() if n not in trials)
        for run in runs.values():
            assert run["info"]["status"] == "FINISHED"
        for run in trials.values():  # what the MLflow UI shows: nested runs, their curves and artifacts
            tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
            assert tags["mlflow.parentRunId"] == parent["info"]["run_id"] and tags["ablation.role"] == "trial"
            for key, expected in (("train/loss", [1, 2, 3, 4, 5, 6]), ("eval/linear_top1", [0, 1, 2, 3, 4, 5, 6])):
                hist = _api(
                    base, f"/api/2.0/mlflow/metrics/get-history?run_id={run['info']['run_id']}&metric_key={key}"
                )["metrics"]
                assert sorted(m["step"] for m in hist) == expected, key  # every epoch, once
            files = _api(base, f"/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}&path=affinity")
            assert [f["path"] for f in files["files"]] == ["affinity/affinity_e0003.npz"]
            # the encoder, of the last epoch (kept while the server was down), and its tag
            files = _api(base, f"/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}&path=encoder")
            assert sorted(f["path"] for f in files["files"]) == ["encoder/config.json", "encoder/model.safetensors"]
            assert tags["ablation.encoder"] == "encoder"
        assert not journals[0].read_text().strip()
        assert not list(tmp_path.glob("ray/tiny/*/artifacts/*/encoder"))  # the driver's copies, once attached
    finally:
        _kill(server)
