"""The report over HTTP from a real ``mlflow server`` equals the report read from its SQLite file."""

import json
import urllib.request

import pytest

from tests.ablations.helpers import free_port, serve_mlflow, stop_server

pytestmark = pytest.mark.slow


def _api(base: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    server = serve_mlflow(f"sqlite:///{tmp_path}/server.db", port, tmp_path / "artifacts")
    yield f"http://127.0.0.1:{port}"
    stop_server(server)


def test_report_over_the_rest_api_reads_and_writes_what_the_sqlite_fast_paths_do(tmp_path, mlflow_server):
    """Over a server the report takes the generic paths (search_runs, get_metric_history per run in a
    thread pool, log_batch per run); read straight from the server's SQLite file it takes the fast
    ones. Same trials, same histories; the summary metrics land on every run."""
    from mlflow import MlflowClient

    from ablations.report import build_report
    from ablations.report.reader import read_study_record
    from tests.ablations.report.test_report import known_study

    parent = known_study(mlflow_server)
    over_http = read_study_record(mlflow_server, run_id=parent)
    direct = read_study_record(f"sqlite:///{tmp_path}/server.db", run_id=parent)
    assert [t.name for t in over_http.trials] == [t.name for t in direct.trials] and len(direct.trials) == 7
    for a, b in zip(over_http.trials, direct.trials):
        assert (a.run_id, a.arm, a.seed, a.grid, a.reference, a.status, a.epochs, a.metric_keys) == (
            b.run_id,
            b.arm,
            b.seed,
            b.grid,
            b.reference,
            b.status,
            b.epochs,
            b.metric_keys,
        )
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
