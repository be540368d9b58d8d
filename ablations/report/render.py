"""The report's third step: every format from one list of sections, into the report's folder.

A report is a title, a subtitle, the notes, then its sections (the main table, the budget table, the probes'
agreement with fine-tuning, the legend, the trials left out) and its figures. Markdown and the HTML page are
rendered from the same ``sections``; CSV and LaTeX hold the tables; a terminal gets the tables and the notes.
"""

from __future__ import annotations

import base64
import html
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from markdown_it import MarkdownIt
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ablations.contract import FINETUNE_TOP1, is_accuracy
from ablations.report import plots
from ablations.report.agreement import agreement_markdown
from ablations.report.compute import Report
from ablations.report.legend import caption, definitions, step_fallbacks
from ablations.report.tables import AblationTable, trials_frame

FORMATS = ("md", "csv", "tex", "html")
AGREEMENT_TITLE = "Which probe stands in for fine-tuning"
BUDGETS_TITLE = "Budgets: separately scheduled runs (the paper's sense)"
STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px}"
    "td,th{border-bottom:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child"
    "{text-align:left}thead th{border-bottom:2px solid #333}img{max-width:100%}figure{margin:1em 0}"
)


@dataclass(frozen=True)
class Section:
    """One section of the report: its title (None: none), its text in Markdown, and its table when it is one."""

    title: str | None
    markdown: str
    table: AblationTable | None = None


def sections(report: Report) -> list[Section]:
    out = [Section("Within one schedule" if report.budget_table else None, report.table.markdown(), report.table)]
    if report.budget_table:
        out.append(Section(BUDGETS_TITLE, report.budget_table.markdown(), report.budget_table))
    if report.agreement:
        out.append(Section(AGREEMENT_TITLE, agreement_markdown(report.agreement, FINETUNE_TOP1)))
    out.append(Section("Columns", definitions(report.record.metric) + step_fallbacks(report.record.trials)))
    left = report.left_out_lines()
    if left:
        out.append(Section("Left out of the aggregates", "\n".join(left) + "\n"))
    return out


def render(report: Report, folder: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Draw the figures and write every format of ``formats`` into ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    figures = _figures(report, folder)
    r = report.record
    title = f"Ablation report: {r.experiment} ({r.parent_name})"
    subtitle = (
        f"Metric `{r.metric}`; target = reference final x {r.fraction:g}; reference arm "
        f"`{r.reference_arm}`; {len(report.summaries)} complete trials; parent run `{r.parent_run_id}`."
        + (" Accuracies are shown in % here; MLflow holds them as fractions (0-1)." if is_accuracy(r.metric) else "")
    )
    parts, files = sections(report), []
    if "md" in formats:
        md = [f"# {title}", "", subtitle, "", *[f"> {n}" for n in report.notes], ""]
        for s in parts:
            md += [*([f"## {s.title}", ""] if s.title else []), s.markdown]
        md += [f"![{p.stem}]({p.name})\n\n*{caption(p)}*\n" for p in figures]
        files.append(_put(folder / "ablation.md", "\n".join(md) + "\n"))
    if "csv" in formats:
        if report.budget_table:
            files.append(_csv(report.budget_table.frame, folder / "budgets.csv"))
        if report.agreement:
            files.append(_csv(pd.DataFrame([vars(a) for a in report.agreement]), folder / "agreement.csv"))
        files.append(_csv(report.table.frame, folder / "ablation.csv"))
        files.append(_csv(trials_frame(report.summaries), folder / "trials.csv"))
    if "tex" in formats:
        words = f"{r.experiment}: {r.metric}, mean [95% CI] over seeds; target = reference final x {r.fraction:g}."
        files.append(_put(folder / "ablation.tex", report.table.latex(words)))
    if "html" in formats:
        files.append(_put(folder / "report.html", _page(title, subtitle, report.notes, parts, figures)))
    return files + figures


def _page(title: str, subtitle: str, notes: list[str], parts: list[Section], figures: list[Path]) -> str:
    md = MarkdownIt("commonmark", {"html": False}).enable("table")  # the page's text is written in Markdown
    body = "".join(
        (f"<h2>{html.escape(s.title, quote=False)}</h2>" if s.title else "")
        + (s.table.html() if s.table else md.render(s.markdown))
        for s in parts
    )
    imgs = "".join(
        f'<figure><img alt="{p.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{md.renderInline(caption(p))}'
        f"</figcaption></figure>"
        for p in figures
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}"
        f"</style></head><body><h1>{html.escape(title)}</h1>{md.render(subtitle)}"
        + "".join(md.render(f"*{n}*") for n in notes)
        + f"{body}<h2>Figures</h2>{imgs}"
        f"<p><small>generated {time.strftime('%Y-%m-%d %H:%M')}</small></p></body></html>"
    )


def _figures(report: Report, folder: Path) -> list[Path]:
    metric = report.record.metric
    figures = [
        plots.learning_curves(report.shown, metric, folder / "learning_curves.png"),
        plots.epochs_to_target(report.figure_rows, folder / "epochs_to_target.png"),
    ]
    if report.budget_rows:
        figures.append(plots.budget_curves(report.budget_rows, metric, report.record.fraction, folder / "budgets.png"))
    if report.profiles:
        figures.append(plots.heterogeneity_depth(report.profiles, folder / "heterogeneity_depth.png"))
    if report.affinity:
        maps = {k: (a.maps, a.num_masked, a.epoch) for k, a in report.affinity.items()}
        figures.append(plots.affinity_maps(maps, folder / "affinity_maps.png"))
    return figures


def _put(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def print_summary(report: Report, console: Console) -> None:
    """The tables and the notes: rich on a terminal; Markdown elsewhere (CI logs, ``| tee``), never cut."""
    r = report.record
    if console.is_terminal:
        console.print(terminal_table(report))
    else:
        print(
            f"{r.experiment}: {r.metric}, target = reference final x {r.fraction:g}; "
            f"{'accuracies in %; ' if is_accuracy(r.metric) else ''}mean [95% CI] over seeds\n\n"
            f"{report.table.markdown()}",
            file=console.file,
            flush=True,
        )
    if report.budget_table:
        text = f"\nBudgets, each its own schedule (the paper's sense):\n\n{report.budget_table.markdown()}"
        print(text, file=console.file, flush=True)
    if report.agreement:
        text = f"\n{AGREEMENT_TITLE}:\n\n{agreement_markdown(report.agreement, FINETUNE_TOP1)}"
        print(text, file=console.file, flush=True)
    for note in report.notes:
        print(f"note: {note}", file=console.file, flush=True)


def terminal_table(report: Report) -> Table:
    """The main table for a terminal: the headline columns, each interval on its own line."""
    r, table = report.record, report.table
    t = Table(
        title=f"{r.experiment}: {r.metric}, target = reference final x {r.fraction:g}; mean [95% CI] over seeds",
        title_justify="left",
    )
    keep = [i for i, h in enumerate(table.headers) if not h.startswith(("Best", "Epoch reduction", "Δ"))]
    for i in keep:
        t.add_column(table.headers[i], justify="left" if i == 0 else "right")
    for row, bold in zip(table.cells, table.bold):
        cells = [row[i].replace(" [", "\n[").replace(" (", "\n(") for i in keep]
        t.add_row(*[f"[bold]{escape(c)}[/]" if bold[i] else escape(c) for c, i in zip(cells, keep)])
    if report.left_out:
        t.caption = f"left out: {len(report.left_out)} trial(s), see the report"
    return t
