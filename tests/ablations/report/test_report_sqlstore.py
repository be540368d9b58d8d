"""The SQLite fast paths (``ablations.report.sqlstore``) read and write exactly what the client's
generic API does: the same runs in the same order, the same histories, the same metric rows,
latest metrics and tags, and so the same report."""

import math
import shutil
import sqlite3

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

from ablations.report import build_report, reader, sqlstore
from ablations.report.source import Source, curve
from tests.ablations.report.test_report import store  # noqa: F401 - the known-curves study, a pytest fixture


def _copy(uri: str, tmp_path, name: str) -> str:
    """The same store (same run ids) in another file: one side takes the fast path, the other the generic one."""
    path = tmp_path / name
    shutil.copy(uri[len("sqlite:///") :], path)
    return f"sqlite:///{path}"


def _rows(uri: str, table: str) -> list[tuple]:
    with sqlite3.connect(uri[len("sqlite:///") :]) as db:
        return sorted(db.execute(f"SELECT * FROM {table}").fetchall(), key=repr)


def _generic(monkeypatch) -> None:
    monkeypatch.setattr(sqlstore, "sql_store", lambda client: None)


def test_child_runs_and_histories_equal_search_runs_and_get_metric_history(store, monkeypatch):  # noqa: F811
    uri, parent_id = store
    client = MlflowClient(uri)
    run = client.search_runs([client.get_run(parent_id).info.experiment_id], "tags.`ablation.trial` = 'fast-s0'")[0]
    # a re-logged step (the later value wins), a NaN and an infinity: stored specially by MLflow's SQL store
    client.log_batch(
        run.info.run_id,
        [
            Metric("eval/linear_top1", 0.9, run.info.end_time + 10, 8),
            Metric("eval/linear_top1", math.nan, 1, 1),
            Metric("eval/linear_top1", math.inf, 1, 3),
        ],
    )
    parent = client.get_run(parent_id)
    assert Source(uri).sql is not None
    fast = Source(uri).child_runs(parent, reader.PARAMS)
    ids = [r.run_id for r in fast]
    keys = ("eval/linear_top1", "hetero/l01", "val/none")
    fast_hist = {k: Source(uri).histories({r.run_id: r.latest[k][0] for r in fast if k in r.latest}, k) for k in keys}
    _generic(monkeypatch)
    generic = Source(uri)
    assert generic.sql is None and not generic.server
    assert generic.child_runs(parent, reader.PARAMS) == fast and len(fast) == 7  # same rows, same order
    assert (
        fast[0].params == {"train.epochs": "8", "data.name": "digits"}
        and "ablation.arm" in fast[0].tags
        and {r.name: r.latest["eval/linear_top1"] for r in fast}["fast-s0"] == (8, 0.9)
    )
    for key, got in fast_hist.items():
        want = {}
        for r in ids:  # get_metric_history per run: the generic path's own call
            points = sorted(client.get_metric_history(r, key), key=lambda m: (m.timestamp, m.step, m.value))
            if points:
                want[r] = curve([(m.step, m.value) for m in points])
        assert got.keys() == want.keys()
        for r in want:
            assert got[r][0].tolist() == want[r][0].tolist()
            assert got[r][1].tolist() == pytest.approx(want[r][1].tolist(), nan_ok=True)
    curve_ = fast_hist["eval/linear_top1"][run.info.run_id]
    assert curve_[1][-1] == 0.9 and math.isnan(curve_[1][0]) and curve_[1][2] == 1.7976931348623157e308


def _batches(ids: list[str], now: int) -> list[tuple[str, list[Metric], list[RunTag]]]:
    a, b, c = ids[:3]
    return [
        (
            a,
            [
                Metric("summary/x", 1.0, now, 0),
                Metric("summary/x", 2.0, now, 1),
                Metric("summary/x", 0.5, now - 1, 1),
                Metric("summary/x", 1.0, now, 0),  # a duplicate: one row
                Metric("eval/linear_top1", 0.1, 1, 0),  # older than the latest: the latest stays
                Metric("hetero/l00", 0.95, now, 99),  # newer: replaces the latest
                Metric("summary/nan", math.nan, now, 0),
                Metric("summary/inf", -math.inf, now, 0),
            ],
            [RunTag("ablation.note", "true"), RunTag("ablation.arm", "renamed")],
        ),  # a new tag, an updated one
        (b, [Metric("summary/x", 3.0, now, 0)], []),
        (c, [], [RunTag("ablation.note", "false")]),
    ]


def test_log_batches_writes_what_log_batch_writes(store, tmp_path):  # noqa: F811
    uri, parent_id = store
    fast_uri, slow_uri = _copy(uri, tmp_path, "fast.db"), _copy(uri, tmp_path, "slow.db")
    ids = [r.run_id for r in Source(uri).child_runs(MlflowClient(uri).get_run(parent_id), ())]
    fast, slow = MlflowClient(fast_uri), MlflowClient(slow_uri)
    for now in (10**12, 10**12 + 5):  # twice: the second round meets the first one's rows (a report built again)
        assert sqlstore.log_batches(sqlstore.sql_store(fast), _batches(ids, now))
        for run_id, metrics, tags in _batches(ids, now):
            slow.log_batch(run_id, metrics=metrics, tags=tags)
        for table in ("metrics", "latest_metrics", "tags", "runs"):
            assert _rows(fast_uri, table) == _rows(slow_uri, table), table
    assert (
        fast.get_run(ids[0]).data.metrics["summary/x"] == 2.0
        and fast.get_run(ids[0]).data.metrics["hetero/l00"] == 0.95
    )


def test_log_batches_leaves_a_deleted_run_to_log_batch(store):  # noqa: F811
    uri, parent_id = store
    client = MlflowClient(uri)
    ids = [r.run_id for r in Source(uri).child_runs(client.get_run(parent_id), ())]
    client.delete_run(ids[1])
    before = _rows(uri, "metrics")
    assert not sqlstore.log_batches(sqlstore.sql_store(client), _batches(ids, 10**12))
    assert _rows(uri, "metrics") == before  # nothing written: the generic path raises MLflow's own error


def test_report_over_the_fast_paths_equals_the_generic_report(store, tmp_path, monkeypatch):  # noqa: F811
    uri, parent_id = store
    fast_uri, slow_uri = _copy(uri, tmp_path, "fast.db"), _copy(uri, tmp_path, "slow.db")
    fast = build_report(fast_uri, parent_run_id=parent_id, out=tmp_path / "fast")
    with monkeypatch.context() as m:
        _generic(m)
        slow = build_report(slow_uri, parent_run_id=parent_id, out=tmp_path / "slow")
    assert [p.name for p in fast.files] == [p.name for p in slow.files]
    for name in (
        "ablation.md",
        "ablation.csv",
        "trials.csv",
        "ablation.tex",
        "learning_curves.png",
        "epochs_to_target.png",
        "heterogeneity_depth.png",
    ):
        assert (tmp_path / "fast" / name).read_bytes() == (tmp_path / "slow" / name).read_bytes(), name

    def written(u: str, table: str) -> list[tuple]:  # the report's own writes, timestamps aside
        with sqlite3.connect(u[len("sqlite:///") :]) as db:
            cols = "run_uuid, key, value" + (", step, is_nan" if table != "tags" else "")
            return sorted(db.execute(f"SELECT {cols} FROM {table}").fetchall(), key=repr)

    for table in ("metrics", "latest_metrics", "tags"):
        assert written(fast_uri, table) == written(slow_uri, table), table
    assert any(k.startswith("summary/") for _, k, *_ in written(fast_uri, "latest_metrics"))
