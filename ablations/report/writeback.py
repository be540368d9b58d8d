"""The report's last step: its numbers and files written back to MLflow.

On each trial run the ``summary/*`` numbers (``numbers.NUMBERS`` marked ``summary``) and ``summary/reached``, each
only where the run does not hold that value already (a report made again writes nothing there); on the study's
parent run each row's ``arm/*`` means and the report's files. Over a SQLite store in one transaction
(``sqlstore.log_batches``), else one asynchronous ``log_batch`` per run (MLflow has no write to several runs at
once), sent while the report renders: through a server backed by SQLite each costs the server a commit, the bulk of
a first report's time there. Metrics alone, no tag: a tag would cost the server a second commit per run and say
what ``summary/reached`` says.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric

from ablations.contract import ARM_METRIC_PREFIX, REACHED, REPORT_FOLDER, SUMMARY_PREFIX
from ablations.report import sqlstore
from ablations.report.aggregate import GroupRow
from ablations.report.compute import Report
from ablations.report.numbers import CENSORED_BY, NUMBERS


def log_numbers(client: MlflowClient, report: Report) -> list:
    """Write every trial's ``summary/*`` metrics (``summary/reached``: 1 reached the target, 0 censored) and the
    parent's ``arm/*`` metrics. Returns the futures of the asynchronous writes to wait for (none over SQLite)."""
    now = int(time.time() * 1000)
    batches = []
    for s in report.summaries:
        values = {SUMMARY_PREFIX + n.key: s.values[n.key] for n in NUMBERS if n.summary}
        if not math.isnan(s.values["target"]):  # a target exists: say whether it was reached (censored otherwise)
            values[REACHED] = float(s.values[CENSORED_BY] is not None)
        had = s.trial.written
        metrics = [
            Metric(k, float(v), now, 0)
            for k, v in values.items()
            if v is not None and not math.isnan(v) and had.get(k) != v
        ]
        if metrics:
            batches.append((s.trial.run_id, metrics, []))
    batches.append((report.record.parent_run_id, arm_metrics(report.rows, now), []))
    store = sqlstore.sql_store(client)
    if store is not None and sqlstore.log_batches(store, batches):
        return []
    futures = [
        client.log_batch(run_id, metrics=metrics, tags=tags, synchronous=False) for run_id, metrics, tags in batches
    ]
    return [f for f in futures if f is not None]  # None: nothing to log on that run


def arm_metrics(rows: list[GroupRow], now: int) -> list[Metric]:
    """Headline numbers per arm (and grid point) for the parent run: means over seeds, in MLflow's units (0-1)."""
    out = []
    for row in rows:
        prefix = ARM_METRIC_PREFIX + re.sub(
            r"[^\w.\-/]", "_", "/".join([row.arm, *(f"{k.split('.')[-1]}_{v}" for k, v in row.grid.items())])
        )
        values = {n.key: row.numbers[n.key].mean if row.numbers[n.key] else math.nan for n in NUMBERS if n.arm}
        values["reached"] = row.reached / row.n
        out += [Metric(f"{prefix}/{k}", float(v), now, 0) for k, v in values.items() if not math.isnan(v)]
    return out


def attach(client: MlflowClient, parent_run_id: str, files: list[Path]) -> None:
    """The report's files as artifacts of the study's parent run (under ``report/``)."""
    for path in files:
        client.log_artifact(parent_run_id, str(path), REPORT_FOLDER)
