"""The report through a real ``mlflow server`` (started here on 127.0.0.1, one for the module) equals the report
read from the server's own SQLite file: the same tables, CSVs and figures, byte for byte, also through a gateway
that forwards MLflow's public API alone (the reader's fallback). A study still running is read as one snapshot
through both, and the report says which trials are still running."""

import io
import json
import shutil
import sqlite3
import urllib.request

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from ablations.contract import REFERENCE_ARM, TARGET_FRACTION, TARGET_METRIC
from ablations.report import build_report, serverstore, sqlstore
from ablations.report.cli import main
from ablations.report.source import Source
from ablations.run.layout import Invocation
from ablations.run.tracking import StudyTracker
from ablations.study import TrialSpec
from mto import TrialConfig
from tests.ablations.helpers import free_port, public_api_gateway, serve_mlflow, stop_server

pytestmark = pytest.mark.slow


def _api(base: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory, mlflow_schema):
    """(the SQLite file's URI, the URL of an ``mlflow server`` over that file); artifacts are proxied from
    ``artifacts/`` for the experiments made through the server."""
    folder = tmp_path_factory.mktemp("served")
    shutil.copy(mlflow_schema, folder / "server.db")
    port = free_port()
    server = serve_mlflow(f"sqlite:///{folder}/server.db", port, folder / "artifacts")
    yield f"sqlite:///{folder}/server.db", f"http://127.0.0.1:{port}"
    stop_server(server)


def _tracker(uri: str, experiment: str, folder, reference: str = "base", metric: str = "eval/linear_top1"):
    tracker = StudyTracker(uri, experiment, Invocation(folder / experiment))
    target = {TARGET_METRIC: metric, TARGET_FRACTION: "1.0", REFERENCE_ARM: reference}
    tracker.start_study(experiment, "", {"resolved_trials.json": "{}"}, target)
    return tracker


def _trial(tracker: StudyTracker, arm: str, seed: int, epochs: int, grid: dict | None = None) -> str:
    cfg = TrialConfig()
    cfg.train.epochs = epochs
    grid = grid or {}
    suffix = "".join(f"-{k.split('.')[-1]}={v}" for k, v in grid.items())
    spec = TrialSpec(f"{arm}-s{seed}{suffix}", arm, seed, grid, cfg, f"base-s{seed}{suffix}", "base")
    return tracker.open_trial(spec)


def finetuned_budget_study(uri: str, folder) -> str:
    """Two arms x two budgets x three seeds, fine-tuned at each budget's end, with two probes and the validation
    twins, heterogeneity of three layers every epoch and affinity maps at two epochs, and a failed trial: every
    table and figure a report makes has something to show. Returns the parent run id."""
    tracker = _tracker(uri, "served", folder, metric="finetune/top1")
    rng = np.random.default_rng(0)
    for arm, finals in {"base": {2: 0.50, 4: 0.60}, "mto": {2: 0.55, 4: 0.65}}.items():
        for budget, final in finals.items():
            for seed in range(3):
                name, tuned = _trial(tracker, arm, seed, budget, {"train.epochs": budget}), final + 0.002 * seed
                for e in range(budget + 1):
                    probes = {"eval/knn_top1": tuned - 0.2 + 0.01 * e, "eval/linear_top1": 0.9 - tuned + 0.01 * e}
                    hetero = {f"hetero/l{l:02d}": 0.9 - 0.1 * l + 0.01 * e + 0.003 * seed for l in range(3)}
                    val = {"val/knn_top1": tuned - 0.21 + 0.01 * e}
                    tracker.log_epoch(name, e, {"train/loss": 1.0 / (e + 1), **probes, **hetero, **val})
                    if e in (budget // 2, budget):
                        buffer = io.BytesIO()
                        np.savez(buffer, affinity=rng.random((3, 8, 8)), num_masked=np.array(6))
                        tracker.log_affinity(name, e, buffer.getvalue())
                tracker.log_epoch(name, budget, {"finetune/top1": tuned, "val/finetune_top1": tuned - 0.01}, "finetune")
                tracker.end_trial(name, "FINISHED")
    broken = _trial(tracker, "broken", 0, 4, {"train.epochs": 4})
    tracker.log_epoch(broken, 1, {"eval/knn_top1": 0.1})
    tracker.end_trial(broken, "FAILED", "NonFiniteLossError: non-finite training loss at epoch 2")
    tracker.end_study("FINISHED")
    return tracker.parent_id


def test_the_report_through_a_server_equals_the_report_from_its_file(served, tmp_path):
    """The store is written through the tracker into the server's SQLite file (artifacts beside it). Read from the
    file, the report takes the SQLite fast paths; through the server, the public search endpoint and the UI's
    bulk history endpoint; through a gateway that forwards only the public API, the bulk endpoint answers 404 and
    the histories come from the public ``get_metric_history``. Every file of the three reports is the same (the
    HTML page but for its time); the summary metrics written back through the server land on every run, and a
    report made again writes none of them again (the values read back through the server equal those written)."""
    file_uri, server = served
    parent = finetuned_budget_study(file_uri, tmp_path)
    with public_api_gateway(server) as (gateway, refused):
        reports = {
            "file": build_report(file_uri, parent_run_id=parent, out=tmp_path / "file", log=False),
            "gateway": build_report(gateway, parent_run_id=parent, out=tmp_path / "gateway", log=False),
            "server": build_report(server, parent_run_id=parent, out=tmp_path / "server"),
        }
    assert any("get-history-bulk" in path for path in refused)  # the fallback was taken, and only there
    names = [p.name for p in reports["file"].files]
    expected = {"ablation.md", "ablation.csv", "trials.csv", "budgets.csv", "agreement.csv", "ablation.tex"}
    assert expected | {"report.html", "heterogeneity_depth.png", "affinity_maps.png"} <= set(names)
    for kind in ("gateway", "server"):
        assert [p.name for p in reports[kind].files] == names
        for name in names:
            a, b = (tmp_path / "file" / name).read_bytes(), (tmp_path / kind / name).read_bytes()
            if name == "report.html":  # its last line says when it was generated
                a, b = a.rsplit(b"<p><small>generated", 1)[0], b.rsplit(b"<p><small>generated", 1)[0]
            assert a == b, (kind, name)
    report = reports["server"]
    assert len(report.summaries) == 12 and [t.name for t in report.left_out] == ["broken-s0-epochs=4"]
    assert len(report.affinity) == 2 and len(report.profiles) == 2  # the full budget's rows, read through the server
    client = MlflowClient(server)
    for s in report.summaries:
        run = client.get_run(s.trial.run_id).data
        assert run.metrics["summary/final"] == s.final and run.metrics["summary/auc"] == s.auc
        assert run.metrics["summary/reached"] == (1.0 if s.epochs_to_target is not None else 0.0)
    assert any(k.startswith("arm/mto/") for k in client.get_run(parent).data.metrics)
    files = {f.path for f in client.list_artifacts(parent, "report")}
    assert {"report/ablation.md", "report/trials.csv", "report/learning_curves.png"} <= files

    def trial_rows() -> int:  # metric and tag rows on the trial runs, in the server's file
        ids = tuple(s.trial.run_id for s in report.summaries)
        marks = ",".join("?" * len(ids))
        with sqlite3.connect(file_uri[len("sqlite:///") :]) as db:
            return sum(
                db.execute(f"SELECT COUNT(*) FROM {t} WHERE run_uuid IN ({marks})", ids).fetchone()[0]
                for t in ("metrics", "tags")
            )

    before = trial_rows()
    build_report(server, parent_run_id=parent, out=tmp_path / "again")  # the same numbers: nothing to write again
    assert trial_rows() == before


@pytest.mark.parametrize("kind", ["file", "server"])
def test_a_study_still_running_is_read_as_one_snapshot_and_its_running_trials_are_named(
    kind, served, tmp_path, monkeypatch, capsys
):
    """A stand-in for ``python -m ablations.report`` while the driver writes. The study is written through the
    driver's own writer (the tracker, over the SQLite file or through the server as a driver does) and left as a
    driver leaves it mid-study: the parent run RUNNING, one trial RUNNING at epoch 2 of 4. Right after the report
    has listed the trial runs, the test makes the driver's next writes through the same tracker: the running trial
    logs its last epochs and ends, and a new trial starts. A real driver can make these writes at any moment of a
    read but the test could not choose when; here they land where a reader that read the store again after its
    listing would go wrong. Not covered: a write landing inside one SQL statement or one HTTP request, which the
    store's own isolation decides. The report equals the one made before the writes and names the running trial;
    the next report has it complete."""
    file_uri, server = served
    tracker = _tracker(file_uri if kind == "file" else server, f"running-{kind}", tmp_path)
    for arm in ("base", "mto"):
        for seed in (0, 1):
            name = _trial(tracker, arm, seed, 4)
            for e in range(5):
                tracker.log_epoch(name, e, {"eval/linear_top1": 0.1 * e + (0.05 if arm == "mto" else 0) + 0.01 * seed})
            tracker.end_trial(name, "FINISHED")
    running = _trial(tracker, "mto", 2, 4)
    for e in range(3):
        tracker.log_epoch(running, e, {"eval/linear_top1": 0.1 * e})
    uri, parent = file_uri if kind == "file" else server, tracker.parent_id
    assert tracker.flush()  # the driver's journal has made every write so far
    before = build_report(uri, parent_run_id=parent, out=tmp_path / "before", log=False)

    listed = Source.child_runs

    def then_the_driver_writes(self, parent_run, params):
        rows = listed(self, parent_run, params)
        for e in (3, 4):
            tracker.log_epoch(running, e, {"eval/linear_top1": 0.9})
        tracker.end_trial(running, "FINISHED")
        tracker.log_epoch(_trial(tracker, "mto", 3, 4), 0, {"eval/linear_top1": 0.0})
        assert tracker.flush()  # in the store before the report reads on
        return rows

    monkeypatch.setattr(Source, "child_runs", then_the_driver_writes)
    assert main(["--run", parent, "--tracking-uri", uri, "--out", str(tmp_path / "during")]) == 0
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "mto-s2: still running (epoch 2 of 4 logged when read" in err and "mto-s3" not in err
    assert "1 trial(s) still running when the study was read" in (tmp_path / "during" / "ablation.md").read_text()
    for name in ("ablation.csv", "trials.csv"):
        assert (tmp_path / "during" / name).read_bytes() == (tmp_path / "before" / name).read_bytes(), name
    assert [t.name for t in before.left_out] == ["mto-s2"] and len(before.summaries) == 4

    after = build_report(uri, parent_run_id=parent, out=tmp_path / "after", log=False)
    assert len(after.summaries) == 5 and [t.name for t in after.left_out] == ["mto-s3"]
    assert after.left_out[0].why_left_out().startswith("still running (epoch 0 of 4 logged when read")


def test_a_bulk_answer_that_may_be_cut_is_asked_again_in_halves_then_through_the_public_api(served):
    """The bulk endpoint answers at most 25,000 points a request and cuts the rest without a word. Runs of 24,990
    and 20 points asked together get a cut answer (25,000 points): each is asked again alone and comes whole. A run
    listed with a latest step the endpoint does not return is left to the public API. Every history equals what
    ``get_metric_history`` returns."""
    file_uri, server = served
    client = MlflowClient(file_uri)
    exp = client.create_experiment("bulk-cut")
    runs = [client.create_run(exp).info.run_id for _ in range(3)]
    sizes = dict(zip(runs, (24_990, 20, 5)))
    want = {r: [(step, 0.5 + step / 1e5) for step in range(n)] for r, n in sizes.items()}
    batches = [(r, [Metric("m", v, 1000 + step, step) for step, v in want[r]], []) for r in runs]
    assert sqlstore.log_batches(sqlstore.sql_store(client), batches)  # one transaction: 25,015 points in a second
    listed = {runs[0]: 24_989, runs[1]: 19, runs[2]: 99}  # the third as if it had logged step 99
    points, public = serverstore.metric_points(server, listed, "m")
    assert public == [runs[2]] and sorted(points) == sorted(runs[:2])
    assert points[runs[0]] == want[runs[0]] and points[runs[1]] == want[runs[1]]
    assert sorted((m.step, m.value) for m in client.get_metric_history(runs[1], "m")) == want[runs[1]]
    curves = Source(server).histories({r: listed[r] for r in runs[1:]}, "m")  # the third through the public API
    assert [list(zip(c[0].tolist(), c[1].tolist())) for c in curves.values()] == [want[runs[1]], want[runs[2]]]
