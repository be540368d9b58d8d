"""A study invocation's report, in four steps, each a module: ``reader`` reads the study's MLflow runs once into a
record, ``compute`` computes everything the report shows, ``render`` writes every format and figure into its
folder, ``writeback`` writes its numbers and files back to MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlflow import MlflowClient

from ablations.contract import resolve_tracking_uri
from ablations.report import writeback
from ablations.report.compute import Report, compute_report
from ablations.report.reader import read_study_record
from ablations.report.render import FORMATS, render

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def build_report(
    uri: str,
    *,
    parent_run_id: str | None = None,
    experiment: str | None = None,
    out: Path | None = None,
    formats: tuple[str, ...] = FORMATS,
    metric: str | None = None,
    fraction: float | None = None,
    epochs: list[int] | None = None,
    log: bool = True,
) -> Report:
    """Build (and by default log to MLflow) the report of one study invocation.

    Raises:
        ReportError: no such study or run, no complete reference trial, or the metric is missing.
    """
    uri = resolve_tracking_uri(uri)
    record = read_study_record(uri, run_id=parent_run_id, experiment=experiment, metric=metric, fraction=fraction)
    report = compute_report(record, epochs)
    report.folder = Path(out or Path("reports") / record.experiment / record.parent_name)
    client = MlflowClient(uri)
    pending = writeback.log_numbers(client, report) if log else []  # written in the background meanwhile
    report.files = render(report, report.folder, formats)
    for future in pending:
        future.wait()
    if log:
        writeback.attach(client, record.parent_run_id, report.files)
    return report
