"""A study invocation's report, in four steps, each a module: ``reader`` reads the study's MLflow runs once into a
record, ``compute`` computes everything the report shows (the reader reads what the figures draw once the tables
say which trials they draw), ``render`` writes every format and figure into its folder, ``writeback`` writes its
numbers and files back to MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path

from ablations.contract import resolve_tracking_uri
from ablations.report import writeback
from ablations.report.compute import Report, add_figures, compute_report, drawn
from ablations.report.reader import read_drawn, read_study_record
from ablations.report.render import FORMATS, render
from ablations.report.source import Source

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
    source = Source(resolve_tracking_uri(uri))
    record = read_study_record(source, run_id=parent_run_id, experiment=experiment, metric=metric, fraction=fraction)
    report = compute_report(record)
    read_drawn(source, record, *drawn(report))
    add_figures(report, epochs)
    report.folder = Path(out or Path("reports") / record.experiment / record.parent_name)
    client = source.client
    pending = writeback.log_numbers(client, report) if log else []  # written in the background meanwhile
    report.files = render(report, report.folder, formats)
    if log:
        writeback.attach(client, record.parent_run_id, report.files)
    for future in pending:
        future.wait()
    return report
