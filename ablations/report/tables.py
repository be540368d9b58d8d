"""Ablation tables as a paper prints them: Markdown, CSV, LaTeX (booktabs) and HTML.

Cells show ``mean [95% CI]`` over seeds; a column's best value is bold (highest, or lowest for
epochs-to-target). Epochs-to-target is a number only when every seed reached the target; else
it reads ``> E`` with how many seeds reached it.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import pandas as pd

from ablations.report.aggregate import GroupRow, TrialSummary
from ablations.report.formulas import Interval
from ablations.report.numbers import COLUMNS, Number, metric_scale, metric_words


@dataclass
class Column:
    """One column of the main table: a declared number (``numbers.COLUMNS``) in the target metric's unit."""

    number: Number
    header: str
    scale: float
    digits: int

    @property
    def key(self) -> str:
        return self.number.key

    def value(self, row: GroupRow) -> Interval | None:
        return row.numbers[self.key]


def columns(metric: str) -> list[Column]:
    scale, digits, unit = metric_scale(metric)
    words = {"name": metric_words(metric), "unit": unit, "pp": " (pp)" if unit else ""}
    return [
        Column(n, n.header.format(**words), *((scale, digits) if n.scaled else (n.scale, n.digits))) for n in COLUMNS
    ]


def _cell(iv: Interval | None, col: Column, row: GroupRow) -> str:
    if col.number.relative and row.is_reference:
        return "ref"
    if col.number.censorable and iv is None:
        return f"> {row.epochs} ({row.reached}/{row.n} reached)"
    return interval_cell(iv, col.scale, col.digits, col.number.suffix, row.n)


def interval_cell(iv: Interval | None, scale: float, digits: int, suffix: str = "", total: int = 0) -> str:
    """``mean [low, high]``; the interval only from 3 seeds on; ``(k/n)`` when only k of the n seeds enter."""
    if iv is None or iv.n == 0 or math.isnan(iv.mean):
        return f"– (0/{total})" if total else "–"
    text = f"{iv.mean * scale:.{digits}f}{suffix}"
    if iv.has_interval:
        text += f" [{iv.low * scale:.{digits}f}, {iv.high * scale:.{digits}f}]"
    if iv.n < total:
        text += f" ({iv.n}/{total})"
    return text


@dataclass
class AblationTable:
    headers: list[str]
    cells: list[list[str]]
    bold: list[list[bool]]
    frame: pd.DataFrame  # numeric, for CSV

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "|".join("---" for _ in self.headers) + "|"]
        for row, bold in zip(self.cells, self.bold):
            lines.append("| " + " | ".join(f"**{c}**" if b else c for c, b in zip(row, bold)) + " |")
        return "\n".join(lines) + "\n"

    def latex(self, caption: str = "") -> str:
        esc = _latex_escape
        out = [
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{esc(caption)}}}" if caption else "",
            "\\begin{tabular}{l" + "r" * (len(self.headers) - 1) + "}",
            "\\toprule",
            " & ".join(esc(h) for h in self.headers) + " \\\\",
            "\\midrule",
        ]
        for row, bold in zip(self.cells, self.bold):
            out.append(" & ".join(f"\\textbf{{{esc(c)}}}" if b else esc(c) for c, b in zip(row, bold)) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(line for line in out if line) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join(
            "<tr>"
            + "".join(
                f"<td><b>{html.escape(c)}</b></td>" if b else f"<td>{html.escape(c)}</td>" for c, b in zip(row, bold)
            )
            + "</tr>"
            for row, bold in zip(self.cells, self.bold)
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _counts(c: Column, r: GroupRow) -> bool:
    """Whether the row's value competes for bold in this column."""
    iv = c.value(r)
    return iv is not None and iv.n > 0 and not math.isnan(iv.mean) and not (c.number.relative and r.is_reference)


def _latex_escape(s: str) -> str:
    for a, b in (
        ("\\", "\\textbackslash{}"),
        ("&", "\\&"),
        ("%", "\\%"),
        ("#", "\\#"),
        ("_", "\\_"),
        ("$", "\\$"),
        ("{", "\\{"),
        ("}", "\\}"),
        ("Δ", "$\\Delta$"),
        (">", "$>$"),
    ):
        s = s.replace(a, b)
    return s


def ablation_table(rows: list[GroupRow], metric: str) -> AblationTable:
    """The main table: one row per arm and grid point."""
    cols = columns(metric)
    axes = sorted({k for r in rows for k in r.grid})
    several = len({r.reference_arm for r in rows}) > 1  # target.reference_of: name each row's reference
    headers = [
        "Arm",
        *[a.split(".")[-1] for a in axes],
        *(["Compared with"] if several else []),
        "Seeds",
        *[c.header for c in cols],
    ]
    cells, bold, records = [], [], []
    best = {}
    for c in cols:
        means = [c.value(r).mean for r in rows if _counts(c, r)]
        if c.number.higher_is_better is not None and len(means) > 1:
            best[c.key] = max(means) if c.number.higher_is_better else min(means)
    for r in rows:
        arm = r.arm + (" (reference)" if r.is_reference else "")
        row = [
            arm,
            *[r.grid.get(a, "") for a in axes],
            *(["–" if r.is_reference else r.reference_arm] if several else []),
            str(r.n),
        ]
        flags = [False] * len(row)
        rec: dict = {
            "arm": r.arm,
            **{a: r.grid.get(a, "") for a in axes},
            "reference": r.is_reference,
            "reference_arm": r.reference_arm,
            "seeds": r.n,
        }
        for c in cols:
            iv = c.value(r)
            row.append(_cell(iv, c, r))
            flags.append(c.key in best and _counts(c, r) and iv.mean == best[c.key])
            rec.update(
                {
                    f"{c.key}_mean": iv.mean if iv else math.nan,
                    f"{c.key}_ci_low": iv.low if iv else math.nan,
                    f"{c.key}_ci_high": iv.high if iv else math.nan,
                }
            )
        rec["epochs_to_target_reached"] = r.reached
        rec["epochs"] = r.epochs
        cells.append(row)
        bold.append(flags)
        records.append(rec)
    return AblationTable(headers, cells, bold, pd.DataFrame.from_records(records))


def trials_frame(summaries: list[TrialSummary]) -> pd.DataFrame:
    """Every complete trial's own numbers (the seeds behind each table row)."""
    return pd.DataFrame.from_records(
        [
            {
                "trial": s.trial.name,
                "arm": s.trial.arm,
                "seed": s.trial.seed,
                **s.trial.grid,
                "reference_trial": s.trial.reference,
                "paired": s.paired,
                "epochs": s.trial.epochs,
                **s.values,
                "run_id": s.trial.run_id,
            }
            for s in summaries
        ]
    )
