"""Fast paths for a SQLite tracking store: the report's reads and writes in a few queries.

Over ``sqlite:///...`` MLflow's client answers through its SQLAlchemy store, building an ORM
object per row: searching 1,000 trial runs loads every param and tag of each (seconds), and
writing the summary metrics back costs three transactions per run. Here the same rows are read
and written with SQLAlchemy Core on MLflow's own tables (its ``dbmodels``, through the store's
session), a handful of statements in all. The generic paths in ``source`` and ``writeback`` (the
client's public API) stay the reference: tests check both give the same
runs, histories and written metrics and tags, including MLflow's latest-metric rule (a new value
replaces the latest only when its (step, timestamp, value) is larger).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlflow import MlflowClient
from mlflow.entities import LifecycleStage, Metric, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

if TYPE_CHECKING:  # imported where used: a report over a server never loads the SQL store (0.7 s)
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

CHUNK = 500  # run ids bound per statement (SQLite's limit on bound variables)
MAX_FLOAT = 1.7976931348623157e308  # how MLflow's SQL stores hold +-inf


@dataclass
class RunRow:
    """What the report reads of one trial run, whichever way it was read."""

    run_id: str
    name: str
    status: str
    tags: dict[str, str]
    params: dict[str, str]  # only the params asked for
    latest: dict[str, tuple[int, float]]  # every metric the run logged -> (step, value) of its latest value

    @property
    def metric_keys(self) -> list[str]:
        return sorted(self.latest)


def sql_store(client: MlflowClient) -> SqlAlchemyStore | None:
    """The client's SQLAlchemy store when it is a SQLite file; None for any other store (a server, a folder)."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if getattr(store, "db_type", None) != "sqlite":
        return None
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return store if isinstance(store, SqlAlchemyStore) else None


def child_runs(store: SqlAlchemyStore, experiment_id: str, parent_id: str, params: tuple[str, ...]) -> list[RunRow]:
    """The active runs of ``experiment_id`` whose parent is ``parent_id``, in ``search_runs``' order
    (start time descending, then run id)."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlRun, SqlTag
    from sqlalchemy import select

    children = select(SqlTag.run_uuid).where(SqlTag.key == MLFLOW_PARENT_RUN_ID, SqlTag.value == parent_id)
    with store.ManagedSessionMaker() as session:
        runs = session.execute(
            select(SqlRun.run_uuid, SqlRun.name, SqlRun.status)
            .where(
                SqlRun.run_uuid.in_(children),
                SqlRun.experiment_id == int(experiment_id),
                SqlRun.lifecycle_stage == LifecycleStage.ACTIVE,
            )
            .order_by(SqlRun.start_time.desc(), SqlRun.run_uuid)
        ).all()
        rows = {r: RunRow(r, name or "", status, {}, {}, {}) for r, name, status in runs}
        for run_id, key, value in session.execute(
            select(SqlTag.run_uuid, SqlTag.key, SqlTag.value).where(SqlTag.run_uuid.in_(children))
        ):
            if run_id in rows:
                rows[run_id].tags[key] = value
        if params:
            for run_id, key, value in session.execute(
                select(SqlParam.run_uuid, SqlParam.key, SqlParam.value).where(
                    SqlParam.run_uuid.in_(children), SqlParam.key.in_(params)
                )
            ):
                if run_id in rows:
                    rows[run_id].params[key] = value
        latest = select(
            SqlLatestMetric.run_uuid,
            SqlLatestMetric.key,
            SqlLatestMetric.step,
            SqlLatestMetric.value,
            SqlLatestMetric.is_nan,
        ).where(SqlLatestMetric.run_uuid.in_(children))
        for run_id, key, step, value, is_nan in session.execute(latest):
            if run_id in rows:
                rows[run_id].latest[key] = (step, math.nan if is_nan else value)
    for row in rows.values():
        row.name = row.name or row.tags.get(MLFLOW_RUN_NAME, "")  # as MLflow's Run entity names it
    return list(rows.values())


def metric_points(store: SqlAlchemyStore, run_ids: list[str], key: str) -> dict[str, list[tuple[int, float]]]:
    """Every (step, value) of metric ``key`` per run, in ``get_metric_history_bulk``'s order
    (timestamp, step, value); runs that never logged it are absent."""
    from mlflow.store.tracking.dbmodels.models import SqlMetric
    from sqlalchemy import select

    out: dict[str, list[tuple[int, float]]] = {}
    with store.ManagedSessionMaker() as session:
        for i in range(0, len(run_ids), CHUNK):
            for run_id, step, value, is_nan in session.execute(
                select(SqlMetric.run_uuid, SqlMetric.step, SqlMetric.value, SqlMetric.is_nan)
                .where(SqlMetric.key == key, SqlMetric.run_uuid.in_(run_ids[i : i + CHUNK]))
                .order_by(SqlMetric.run_uuid, SqlMetric.timestamp, SqlMetric.step, SqlMetric.value)
            ):
                out.setdefault(run_id, []).append((step, math.nan if is_nan else value))
    return out


def log_batches(store: SqlAlchemyStore, batches: list[tuple[str, list[Metric], list[RunTag]]]) -> bool:
    """Write metrics and tags on many runs in one transaction, as ``log_batch`` on each would.

    Returns False, writing nothing, when some run is not active (``log_batch`` would refuse it):
    the caller then takes the generic path, which reports the error.
    """
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun, SqlTag
    from sqlalchemy import select, tuple_
    from sqlalchemy.dialects.sqlite import insert

    ids = sorted({run_id for run_id, _, _ in batches})
    with store.ManagedSessionMaker(read_only=False) as session:
        active = set()
        for i in range(0, len(ids), CHUNK):
            active |= set(
                session.scalars(
                    select(SqlRun.run_uuid).where(
                        SqlRun.run_uuid.in_(ids[i : i + CHUNK]), SqlRun.lifecycle_stage == LifecycleStage.ACTIVE
                    )
                )
            )
        if active != set(ids) or any(t.key == MLFLOW_RUN_NAME for _, _, ts in batches for t in ts):
            return False  # (``log_batch`` renames the run for that tag: left to it)
        metrics, latest, tags = [], {}, {}
        for run_id, batch_metrics, batch_tags in batches:
            for m in batch_metrics:
                is_nan = math.isnan(m.value)
                value = 0.0 if is_nan else max(-MAX_FLOAT, min(MAX_FLOAT, m.value))
                row = {
                    "run_uuid": run_id,
                    "key": m.key,
                    "value": value,
                    "timestamp": m.timestamp,
                    "step": m.step,
                    "is_nan": is_nan,
                }
                metrics.append(row)
                old = latest.get((run_id, m.key))  # the batch's own latest per key, by MLflow's rule
                if old is None or (m.step, m.timestamp, value) > (old["step"], old["timestamp"], old["value"]):
                    latest[(run_id, m.key)] = row
            for t in batch_tags:
                tags[(run_id, t.key)] = {"run_uuid": run_id, "key": t.key, "value": t.value}
        # Core statements on MLflow's tables (no ORM object per row), each one executemany
        if metrics:
            session.execute(insert(SqlMetric.__table__).on_conflict_do_nothing(), metrics)
            table = SqlLatestMetric.__table__
            stmt = insert(table)
            newer = tuple_(stmt.excluded.step, stmt.excluded.timestamp, stmt.excluded.value) > tuple_(
                table.c.step, table.c.timestamp, table.c.value
            )
            session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[table.c.key, table.c.run_uuid],
                    set_={c: stmt.excluded[c] for c in ("value", "timestamp", "step", "is_nan")},
                    where=newer,
                ),
                list(latest.values()),
            )
        if tags:
            table = SqlTag.__table__
            stmt = insert(table)
            session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[table.c.key, table.c.run_uuid], set_={"value": stmt.excluded.value}
                ),
                list(tags.values()),
            )
    return True
