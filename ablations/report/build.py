"""A study invocation's report: tables (Markdown, CSV, LaTeX, HTML) and figures from its MLflow runs.

``build_report`` reads the runs (``reader``), summarises each trial and aggregates over seeds
(``aggregate``), writes the files, logs ``summary/*`` metrics on every trial run and attaches
the files to the study's parent run.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from markdown_it import MarkdownIt
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ablations.contract import (
    AFFINITY_FOLDER,
    ARM_METRIC_PREFIX,
    CENSORED,
    FINETUNE_TOP1,
    HETERO_PREFIX,
    PROBE_METRICS,
    REACHED,
    REPORT_FOLDER,
    SUMMARY,
    SYNTHETIC_DATA,
    resolve_tracking_uri,
)
from ablations.report import plots, sqlstore
from ablations.report.aggregate import GroupRow, TrialSummary, aggregate, shown_rows, summarize, winner
from ablations.report.agreement import Agreement, agreement_markdown, finetuning_curves, study_agreement
from ablations.report.budgets import BudgetRow, budget_rows
from ablations.report.legend import DEFINITIONS, caption
from ablations.report.metrics import MIN_SEEDS_FOR_INTERVAL, is_accuracy
from ablations.report.reader import (
    ReportError,
    StudyRecord,
    TrialRecord,
    histories,
    read_study_record,
    selection_metric,
)
from ablations.report.tables import AblationTable, ablation_table, budget_table, trials_frame

FORMATS = ("md", "csv", "tex", "html")
AGREEMENT_TITLE = "Which probe stands in for fine-tuning"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@dataclass
class Report:
    record: StudyRecord
    summaries: list[TrialSummary]
    rows: list[GroupRow]
    table: AblationTable
    left_out: list[TrialRecord]
    folder: Path
    budget_rows: list[BudgetRow] = field(default_factory=list)
    budget_table: AblationTable | None = None  # only for a study with several budgets
    agreement: list[Agreement] = field(default_factory=list)  # probes against fine-tuning (a study that fine-tuned)
    files: list[Path] = field(default_factory=list)
    heterogeneity_epochs: list[int] = field(default_factory=list)  # the epochs the heterogeneity figure shows

    @property
    def notes(self) -> list[str]:
        """What the reader must know before reading the numbers."""
        out = []
        if any(t.data == SYNTHETIC_DATA for t in self.record.trials):
            out.append(
                "data.name is synthetic (random images, for throughput): every accuracy here and every "
                "comparison built on one is meaningless."
            )
        seeds = min((r.n for r in self.rows), default=0)
        if seeds < MIN_SEEDS_FOR_INTERVAL:
            out.append(
                f"Only {seeds} seed(s) per row: intervals over fewer than {MIN_SEEDS_FOR_INTERVAL} seeds are "
                "not meaningful and are not shown; the means alone decide nothing."
            )
        full = max(r.epochs for r in self.rows) if self.budget_rows else None  # a budget study: the full budget
        best = winner([r for r in self.rows if full is None or r.epochs == full])
        if best is None:
            out.append("No validation metric was logged (no validation split): no row is selected as best.")
        else:
            out.append(
                f"Selected on validation ({selection_metric(self.record.metric)}, mean final over seeds): {best.label}."
            )
        return out

    def left_out_lines(self) -> list[str]:
        """One Markdown bullet per trial left out of the aggregates, with the reason."""
        return [f"- {t.name}: {t.why_left_out()}" for t in sorted(self.left_out, key=lambda t: t.name)]

    def print_table(self, console: Console) -> None:
        """The main table: rich on a terminal; the Markdown table elsewhere (CI logs, ``| tee``), never cut."""
        if console.is_terminal:
            console.print(self.terminal_table())
        else:
            print(
                f"{self.record.experiment}: {self.record.metric}, target = reference final x {self.record.fraction:g}; "
                f"{'accuracies in %; ' if is_accuracy(self.record.metric) else ''}mean [95% CI] over seeds\n\n"
                f"{self.table.markdown()}",
                file=console.file,
                flush=True,
            )
        if self.budget_table:
            print(
                f"\nBudgets, each its own schedule (the paper's sense):\n\n{self.budget_table.markdown()}",
                file=console.file,
                flush=True,
            )
        if self.agreement:
            print(
                f"\n{AGREEMENT_TITLE}:\n\n{agreement_markdown(self.agreement, FINETUNE_TOP1)}",
                file=console.file,
                flush=True,
            )
        for note in self.notes:
            print(f"note: {note}", file=console.file, flush=True)

    def terminal_table(self) -> Table:
        """The main table for a terminal: the headline columns, each interval on its own line."""
        t = Table(
            title=f"{self.record.experiment}: {self.record.metric}, target = reference final x "
            f"{self.record.fraction:g}; mean [95% CI] over seeds",
            title_justify="left",
        )
        keep = [i for i, h in enumerate(self.table.headers) if not h.startswith(("Best", "Epoch reduction", "Δ"))]
        for i in keep:
            t.add_column(self.table.headers[i], justify="left" if i == 0 else "right")
        for row, bold in zip(self.table.cells, self.table.bold):
            cells = [row[i].replace(" [", "\n[").replace(" (", "\n(") for i in keep]
            t.add_row(*[f"[bold]{escape(c)}[/]" if bold[i] else escape(c) for c, i in zip(cells, keep)])
        if self.left_out:
            t.caption = f"left out: {len(self.left_out)} trial(s), see the report"
        return t


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
    summaries = summarize(record)
    if not summaries:
        raise ReportError("no trial is complete yet: nothing to aggregate")
    rows = aggregate(summaries)
    budgets = budget_rows(summaries, record.fraction)
    client = MlflowClient(uri)
    finetuned, probes = finetuning_curves(client, [s.trial for s in summaries])
    side = probes if record.metric not in PROBE_METRICS else {}  # the probes beside fine-tuned accuracy
    report = Report(
        record,
        summaries,
        rows,
        ablation_table(rows, record.metric),
        [t for t in record.trials if not t.complete],
        Path(out or Path("reports") / record.experiment / record.parent_name),
        budgets,
        budget_table(budgets, record.metric, side) if budgets else None,
        study_agreement(finetuned, probes),
    )
    report.folder.mkdir(parents=True, exist_ok=True)
    pending = _log_summaries(client, report) if log else []  # written in the background meanwhile
    figures = _figures(client, report, epochs if epochs is not None else record.report_epochs)
    _write(report, figures, formats)
    for future in pending:
        future.wait()
    if log:
        for path in report.files:
            client.log_artifact(record.parent_run_id, str(path), REPORT_FOLDER)
    return report


def _figures(client: MlflowClient, report: Report, epochs: list[int] | None) -> list[Path]:
    folder, rows = report.folder, report.rows
    if report.budget_rows:  # curves and profiles of the full-budget runs; budgets get their own figure
        full = max(r.epochs for r in rows)
        rows = [r for r in rows if r.epochs == full]
    shown = shown_rows(rows)
    figures = [
        plots.learning_curves(shown, report.record.metric, folder / "learning_curves.png"),
        plots.epochs_to_target(rows, folder / "epochs_to_target.png"),
    ]
    if report.budget_rows:
        figures.append(
            plots.budget_curves(
                report.budget_rows, report.record.metric, report.record.fraction, folder / "budgets.png"
            )
        )
    profiles = _heterogeneity_profiles(client, shown, epochs)
    if profiles:
        report.heterogeneity_epochs = sorted({e for by_epoch in profiles.values() for e in by_epoch})
        figures.append(plots.heterogeneity_depth(profiles, folder / "heterogeneity_depth.png"))
    maps = _affinity(client, shown)
    if maps:
        figures.append(plots.affinity_maps(maps, folder / "affinity_maps.png"))
    return figures


def _heterogeneity_profiles(
    client: MlflowClient, rows: list[GroupRow], wanted: list[int] | None, seeds: int = 3
) -> dict[str, dict[int, np.ndarray]]:
    """Mean over (up to ``seeds``) seeds of ``hetero/lNN`` at the chosen epochs, per shown row."""
    trials = [s.trial for row in rows for s in row.summaries[:seeds]]
    keys = sorted({k for t in trials for k in t.metric_keys if k.startswith(HETERO_PREFIX)})
    curves = {k: histories(client, [t.run_id for t in trials], k) for k in keys}
    out: dict[str, dict[int, np.ndarray]] = {}
    for row in rows:
        per_trial = [
            [curves[k][s.trial.run_id] for k in keys]
            for s in row.summaries[:seeds]
            if keys and all(s.trial.run_id in curves[k] for k in keys)
        ]
        if not per_trial:
            continue
        available = [int(e) for e in per_trial[0][0][0]]
        out[row.label] = {
            e: np.mean([[np.interp(e, c[0], c[1]) for c in trial] for trial in per_trial], axis=0)
            for e in plots.chosen_epochs(available, wanted)
        }
    return out


def _affinity(client: MlflowClient, rows: list[GroupRow]) -> dict[str, tuple[np.ndarray, int, int]]:
    """The latest affinity maps of each shown row's first seed."""
    maps = {}
    for row in rows:
        run_id = row.summaries[0].trial.run_id
        files = sorted(f.path for f in client.list_artifacts(run_id, AFFINITY_FOLDER) if f.path.endswith(".npz"))
        if not files:
            continue
        with np.load(client.download_artifacts(run_id, files[-1])) as z:
            epoch = int(Path(files[-1]).stem.rsplit("_e", 1)[-1])
            maps[f"{row.label} s{row.summaries[0].trial.seed}"] = (z["affinity"], int(z["num_masked"]), epoch)
    return maps


def _write(report: Report, figures: list[Path], formats: tuple[str, ...]) -> None:
    r, folder = report.record, report.folder
    title = f"Ablation report: {r.experiment} ({r.parent_name})"
    subtitle = (
        f"Metric `{r.metric}`; target = reference final x {r.fraction:g}; reference arm "
        f"`{r.reference_arm}`; {len(report.summaries)} complete trials; parent run `{r.parent_run_id}`."
        + (" Accuracies are shown in % here; MLflow holds them as fractions (0-1)." if is_accuracy(r.metric) else "")
    )
    left = report.left_out_lines()
    agreement_md = (
        [f"## {AGREEMENT_TITLE}", "", agreement_markdown(report.agreement, FINETUNE_TOP1)] if report.agreement else []
    )
    budget_md = (
        ["## Budgets: separately scheduled runs (the paper's sense)", "", report.budget_table.markdown()]
        if report.budget_table
        else []
    )
    if "md" in formats:
        md = [
            f"# {title}",
            "",
            subtitle,
            "",
            *[f"> {n}" for n in report.notes],
            "",
            *(["## Within one schedule", ""] if budget_md else []),
            report.table.markdown(),
            *budget_md,
            *agreement_md,
            "## Columns",
            "",
            DEFINITIONS,
        ]
        if left:
            md += ["## Left out of the aggregates", "", *left, ""]
        md += [f"![{p.stem}]({p.name})\n\n*{caption(p)}*\n" for p in figures]
        report.files.append(_put(folder / "ablation.md", "\n".join(md) + "\n"))
    if "csv" in formats:
        if report.budget_table:
            report.budget_table.frame.to_csv(folder / "budgets.csv", index=False)
            report.files.append(folder / "budgets.csv")
        if report.agreement:
            pd.DataFrame([vars(a) for a in report.agreement]).to_csv(folder / "agreement.csv", index=False)
            report.files.append(folder / "agreement.csv")
        report.table.frame.to_csv(folder / "ablation.csv", index=False)
        trials_frame(report.summaries).to_csv(folder / "trials.csv", index=False)
        report.files += [folder / "ablation.csv", folder / "trials.csv"]
    if "tex" in formats:
        report.files.append(
            _put(
                folder / "ablation.tex",
                report.table.latex(
                    f"{r.experiment}: {r.metric}, mean [95% CI] over seeds; target = reference final x {r.fraction:g}."
                ),
            )
        )
    if "html" in formats:
        md = MarkdownIt("commonmark", {"html": False}).enable("table")  # the page's text is written in Markdown
        imgs = "".join(
            f'<figure><img alt="{p.stem}" src="data:image/png;base64,'
            f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{md.renderInline(caption(p))}'
            f"</figcaption></figure>"
            for p in figures
        )
        left_html = ("<h2>Left out of the aggregates</h2>" + md.render("\n".join(left))) if left else ""
        page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px}"
            "td,th{border-bottom:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child"
            "{text-align:left}thead th{border-bottom:2px solid #333}img{max-width:100%}figure{margin:1em 0}"
            f"</style></head><body><h1>{html.escape(title)}</h1>{md.render(subtitle)}"
            + "".join(md.render(f"*{n}*") for n in report.notes)
            + ("<h2>Within one schedule</h2>" if budget_md else "")
            + f"{report.table.html()}"
            + (
                f"<h2>Budgets: separately scheduled runs (the paper's sense)</h2>{report.budget_table.html()}"
                if report.budget_table
                else ""
            )
            + (f"<h2>{AGREEMENT_TITLE}</h2>{md.render(agreement_md[2])}" if agreement_md else "")
            + f"<h2>Columns</h2>{md.render(DEFINITIONS)}{left_html}<h2>Figures</h2>{imgs}"
            f"<p><small>generated {time.strftime('%Y-%m-%d %H:%M')}</small></p></body></html>"
        )
        report.files.append(_put(folder / "report.html", page))
    report.files += figures


def _put(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _log_summaries(client: MlflowClient, report: Report) -> list:
    """Write ``summary/*`` metrics (and the censored tag) on each trial run and ``arm/*`` metrics on the
    parent: over a SQLite store in one transaction (``sqlstore.log_batches``), else one asynchronous
    ``log_batch`` per run (MLflow's asynchronous logging). Returns the futures to wait for."""
    now = int(time.time() * 1000)
    batches = []
    for s in report.summaries:
        values = {SUMMARY[k]: getattr(s, k) for k in SUMMARY}
        tags = []
        if not np.isnan(s.target):  # a target exists: say whether it was reached (censored otherwise)
            values[REACHED] = float(s.epochs_to_target is not None)
            tags = [RunTag(CENSORED, "false" if s.epochs_to_target is not None else "true")]
        metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if v is not None and not np.isnan(v)]
        batches.append((s.trial.run_id, metrics, tags))
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
        values = {
            "rauc": row.rauc.mean,
            "final": row.final.mean,
            "auc": row.auc.mean,
            "reached": row.reached / row.n,
            "speedup": row.speedup.mean,
            "epochs_to_target": row.epochs_to_target.mean if row.epochs_to_target is not None else math.nan,
        }
        out += [Metric(f"{prefix}/{k}", float(v), now, 0) for k, v in values.items() if not math.isnan(v)]
    return out
