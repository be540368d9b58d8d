"""Where the report reads from: one tracking store, through the fewest reads its kind allows, the same rows from each.

- A SQLite file: ``sqlstore``, a few queries on MLflow's own tables.
- An ``mlflow server``: ``serverstore``, the public search endpoint read as JSON and the bulk history
  endpoint of MLflow's UI (not public), with the public ``get_metric_history`` where that is missing.
- Any other store (another SQL database, a folder): the client's public API, with the SQL store's own
  bulk history query where it has one.

Artifacts go through the client's public API (``list_artifacts``, ``download_artifacts``) whatever the store:
only the few trials the figures draw are read, so there is nothing to batch.

MLflow's public API here: ``MlflowClient`` (``search_runs``, ``get_metric_history``, ``list_artifacts``,
``download_artifacts``) and the REST endpoints ``serverstore`` names public. Not public: MLflow's SQL store
classes and tables (``sqlstore``; ``get_metric_history_bulk`` of another SQL store) and the UI's bulk history
endpoint (``serverstore``); each has the public API as its fallback or its reference in the tests.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from ablations.report import serverstore, sqlstore
from ablations.report.formulas import Curve, as_curve
from ablations.report.sqlstore import RunRow


class Source:
    """The store at ``uri``, read with ``threads`` requests at a time where it is a server."""

    def __init__(self, uri: str, threads: int = 8):
        self.uri, self.threads = uri, threads
        self.client = MlflowClient(uri)
        self.sql = sqlstore.sql_store(self.client)
        self.server = serverstore.is_server(uri)
        self.no_bulk = False  # set once a server answers 404 at the bulk history endpoint: the public API from then on

    def child_runs(self, parent: Run, params: tuple[str, ...]) -> list[RunRow]:
        """The parent's active child runs, in ``search_runs``' order (start time descending, then run id), with
        their tags, the ``params`` asked for and each metric's latest value and its step."""
        exp, parent_id = parent.info.experiment_id, parent.info.run_id
        if self.sql is not None:
            return sqlstore.child_runs(self.sql, exp, parent_id, params)
        if self.server:
            return serverstore.child_runs(self.uri, parent, params)
        runs = self.client.search_runs([exp], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}'", max_results=50_000)
        return [
            RunRow(
                r.info.run_id,
                r.info.run_name or "",
                r.info.status,
                r.data.tags,
                {k: v for k, v in r.data.params.items() if k in params},
                {m.key: (m.step, m.value) for m in r.data.to_proto().metrics},  # the latest values, with their steps
            )
            for r in runs
        ]

    def histories(self, runs: dict[str, int], metric: str) -> dict[str, Curve]:
        """One metric's (epochs, values) of the runs that logged it, in the order of ``runs`` (run id -> the step
        of its latest value of ``metric`` when listed), never the store's order, which follows the random run
        ids: a bootstrap over runs must not depend on it. Every path returns the same points (tests check it)."""
        ids = list(runs)
        points: dict[str, list[tuple[int, float]]] = {}
        public = ids  # the runs left to the public API
        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        bulk = getattr(store, "get_metric_history_bulk", None)
        if self.sql is not None:
            points, public = sqlstore.metric_points(self.sql, ids, metric), []
        elif self.server and not self.no_bulk:
            got = serverstore.metric_points(self.uri, runs, metric, min(self.threads, 4))
            if got is None:
                self.no_bulk = True
            else:
                points, public = got
        elif bulk is not None and not self.server:  # another SQL database: its store's bulk query (not public)
            for i in range(0, len(ids), 500):
                for m in bulk(ids[i : i + 500], metric, max_results=10**9):
                    points.setdefault(m.run_id, []).append((m.step, m.value))
            public = []
        if public:
            with ThreadPoolExecutor(self.threads) as pool:
                hists = pool.map(lambda r: self.client.get_metric_history(r, metric), public)
                for r, h in zip(public, hists):  # in the bulk order: a re-logged step keeps the value logged last
                    if h:
                        points[r] = [(m.step, m.value) for m in sorted(h, key=lambda m: (m.timestamp, m.step, m.value))]
        return {run_id: curve(points[run_id]) for run_id in ids if run_id in points}  # in the order asked for

    def latest_file(self, run_id: str, folder: str, suffix: str) -> str | None:
        """The last (by name) artifact of ``run_id`` in ``folder`` ending in ``suffix``, or None."""
        files = sorted(f.path for f in self.client.list_artifacts(run_id, folder) if f.path.endswith(suffix))
        return files[-1] if files else None

    def download(self, run_id: str, path: str) -> Path:
        return Path(self.client.download_artifacts(run_id, path))


def curve(points: list[tuple[int, float]]) -> Curve:
    """A history as (epochs, values): sorted by step; a re-logged step keeps its last value."""
    by_step = dict(points)
    steps = sorted(by_step)
    return as_curve(steps, [by_step[s] for s in steps])
