"""The study's runs read back over HTTP from a real ``mlflow server`` (what the UI shows)."""

import json
import urllib.request

import pytest

from .conftest import run_cli, write_study
from .helpers import free_port, serve_mlflow, stop_mlflow

pytestmark = pytest.mark.slow


def _api(base: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    server = serve_mlflow(f"sqlite:///{tmp_path}/server.db", port, tmp_path / "artifacts")
    yield f"http://127.0.0.1:{port}"
    stop_mlflow(server)


def test_study_runs_are_served_over_the_rest_api(tmp_path, mlflow_server):
    path = write_study(tmp_path, seeds=[0, 1])
    proc = run_cli(str(path), "--no-report", "--tracking-uri", mlflow_server, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"open {mlflow_server}/#/experiments/" in proc.stderr and "workflowType=machine_learning in a browser" in proc.stderr
    exp = _api(mlflow_server, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=tiny")["experiment"]
    runs = _api(mlflow_server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]],
                                                               "max_results": 100})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    parent = [r for r, t in zip(runs, tags) if t.get("ablation.role") == "study"]
    children = {t["ablation.trial"]: r for r, t in zip(runs, tags) if t.get("ablation.role") == "trial"}
    assert len(parent) == 1 and sorted(children) == ["mto-s0", "mto-s1", "simmim-s0", "simmim-s1"]
    parent_id = parent[0]["info"]["run_id"]
    for name, run in children.items():
        t = {x["key"]: x["value"] for x in run["data"]["tags"]}
        assert t["mlflow.parentRunId"] == parent_id and run["info"]["status"] == "FINISHED"
        hist = _api(mlflow_server, f"/api/2.0/mlflow/metrics/get-history?run_id={run['info']['run_id']}"
                                   "&metric_key=eval/linear_top1")["metrics"]
        assert sorted(m["step"] for m in hist) == [0, 1, 2, 3] and all(0 <= m["value"] <= 1 for m in hist)
        files = _api(mlflow_server, f"/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}&path=affinity")
        assert [f["path"] for f in files["files"]] == ["affinity/affinity_e0003.npz"]


def test_report_over_the_rest_api_reads_and_writes_what_the_sqlite_fast_paths_do(tmp_path, mlflow_server):
    """Over a server the report takes the generic paths (search_runs, get_metric_history per run in a
    thread pool, log_batch per run); read straight from the server's SQLite file it takes the fast
    ones. Same trials, same histories; the summary metrics land on every run."""
    from mlflow import MlflowClient

    from ablations.report import build_report
    from ablations.report.reader import load_study

    from .test_report import known_study

    parent = known_study(mlflow_server)
    over_http = load_study(mlflow_server, run_id=parent)
    direct = load_study(f"sqlite:///{tmp_path}/server.db", run_id=parent)
    assert [t.name for t in over_http.trials] == [t.name for t in direct.trials] and len(direct.trials) == 7
    for a, b in zip(over_http.trials, direct.trials):
        assert (a.run_id, a.arm, a.seed, a.grid, a.reference, a.status, a.epochs, a.metric_keys) == \
               (b.run_id, b.arm, b.seed, b.grid, b.reference, b.status, b.epochs, b.metric_keys)
        assert a.curve[0].tolist() == b.curve[0].tolist() and a.curve[1].tolist() == b.curve[1].tolist()

    report = build_report(mlflow_server, parent_run_id=parent, out=tmp_path / "rep")
    client = MlflowClient(mlflow_server)
    for s in report.summaries:
        run = client.get_run(s.trial.run_id).data
        assert run.metrics["summary/final"] == s.final and run.metrics["summary/auc"] == s.auc
        assert run.tags["ablation.censored"] == ("false" if s.epochs_to_target is not None else "true")
    assert any(k.startswith("arm/fast/") for k in client.get_run(parent).data.metrics)
    files = {f.path for f in client.list_artifacts(parent, "report")}
    assert {"report/ablation.md", "report/trials.csv", "report/learning_curves.png"} <= files
