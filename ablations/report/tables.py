"""Ablation tables as a paper prints them: Markdown, CSV, LaTeX (booktabs) and HTML.

Cells show ``mean [95% CI]`` over seeds; a column's best value is bold (highest, or lowest for
epochs-to-target). Epochs-to-target is a number only when every seed reached the target; else
it reads ``> E`` with how many seeds reached it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ablations.report.aggregate import GroupRow, TrialSummary
from ablations.report.budgets import BudgetRow
from ablations.report.metrics import Curve, Interval, is_accuracy, mean_ci


@dataclass
class Column:
    key: str  # CSV column stem
    header: str
    value: Callable[[GroupRow], Interval | None]
    scale: float = 1.0
    digits: int = 1
    higher_is_better: bool | None = True  # None: never bold
    suffix: str = ""
    relative: bool = False  # a comparison with the reference: "ref" on reference rows, never bold there


def columns(metric: str) -> list[Column]:
    pct = is_accuracy(metric)
    unit, scale = (" (%)", 100.0) if pct else ("", 1.0)
    name = metric.split("/")[-1].replace("_", " ")
    return [
        Column("final", f"Final {name}{unit}", lambda r: r.final, scale, 1 if pct else 3),
        Column("best", f"Best{unit}", lambda r: r.best, scale, 1 if pct else 3),
        Column("auc", f"AUC{unit}", lambda r: r.auc, scale, 1 if pct else 3),
        Column("rauc", "RAUC", lambda r: r.rauc, 1.0, 3, relative=True),
        Column(
            "epochs_to_target",
            "Epochs to target (within one schedule)",
            lambda r: r.epochs_to_target,
            1.0,
            1,
            higher_is_better=False,
        ),
        Column("speedup", "Speed-up (within)", lambda r: r.speedup, 1.0, 2, suffix="x", relative=True),
        Column("epoch_reduction", "Epoch reduction (within, %)", lambda r: r.reduction, 100.0, 1, relative=True),
        Column(
            "delta_final",
            f"Δ final{' (pp)' if pct else ''}",
            lambda r: r.delta_final,
            scale,
            1 if pct else 3,
            relative=True,
        ),
    ]


def _cell(iv: Interval | None, col: Column, row: GroupRow) -> str:
    if col.relative and row.is_reference:
        return "ref"
    if col.key == "epochs_to_target" and iv is None:
        return f"> {row.epochs} ({row.reached}/{row.n} reached)"
    return interval_cell(iv, col.scale, col.digits, col.suffix, row.n)


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
    return iv is not None and iv.n > 0 and not math.isnan(iv.mean) and not (c.relative and r.is_reference)


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
        if c.higher_is_better is not None and len(means) > 1:
            best[c.key] = max(means) if c.higher_is_better else min(means)
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


def budget_table(rows: list[BudgetRow], metric: str, side: dict[str, dict[str, Curve]] | None = None) -> AblationTable:
    """Final metric per budget (each budget its own schedule) and the budget to reach the reference's
    full-budget final, with the epoch reduction in the paper's sense; then, as side columns, each metric of
    ``side`` (metric -> run id -> curve: the probes beside fine-tuning) at the end of each budget."""
    side = side or {}
    pct = is_accuracy(metric)
    scale, digits = (100.0, 1) if pct else (1.0, 3)
    budgets = sorted({b for r in rows for b in r.budgets})
    axes = sorted({k for r in rows for k in r.grid})
    headers = [
        "Arm",
        *[a.split(".")[-1] for a in axes],
        "Compared with",
        "Seeds",
        *[f"Final @ {b} ep{' (%)' if pct else ''}" for b in budgets],
        "Budget to target (epochs)",
        "Epoch reduction (%)",
        *[f"{m.split('/')[-1].replace('_', ' ')} @ {b} ep{' (%)' if pct else ''}" for m in side for b in budgets],
    ]
    cells, bold, records = [], [], []
    for r in rows:
        extra = {
            (m, b): mean_ci([_last(curves.get(s.trial.run_id)) for s in r.runs.get(b, [])])
            for m, curves in side.items()
            for b in budgets
        }
        seeds = max((iv.n for iv in r.finals.values()), default=0)
        to_target = (
            interval_cell(r.to_target, 1.0, 1)
            if r.reached == r.seeds and r.seeds
            else f"> {max(budgets)} ({r.reached}/{r.seeds} reached)"
        )
        row = [
            r.arm + (" (reference)" if r.is_reference else ""),
            *[r.grid.get(a, "") for a in axes],
            "–" if r.is_reference else r.reference_arm,
            str(seeds),
            *[interval_cell(r.finals.get(b), scale, digits) for b in budgets],
            to_target,
            interval_cell(r.reduction, 100.0, 1, total=r.seeds) if r.reached else f"– (0/{r.seeds})",
            *[interval_cell(iv, scale, digits) for iv in extra.values()],
        ]
        cells.append(row)
        bold.append([False] * len(row))
        records.append(
            {
                "arm": r.arm,
                **{a: r.grid.get(a, "") for a in axes},
                "reference_arm": r.reference_arm,
                **{f"final_at_{b}_mean": (r.finals[b].mean if b in r.finals else math.nan) for b in budgets},
                "budget_to_target_mean": r.to_target.mean,
                "budget_to_target_ci_low": r.to_target.low,
                "budget_to_target_ci_high": r.to_target.high,
                "reached": r.reached,
                "compared_seeds": r.seeds,
                "epoch_reduction_mean": r.reduction.mean,
                **{f"{m.split('/')[-1]}_at_{b}_mean": iv.mean for (m, b), iv in extra.items()},
            }
        )
    return AblationTable(headers, cells, bold, pd.DataFrame.from_records(records))


def _last(curve: Curve | None) -> float | None:
    return float(curve[1][-1]) if curve is not None else None


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
                "target": s.target,
                "final": s.final,
                "best": s.best,
                "auc": s.auc,
                "rauc": s.rauc,
                "epochs_to_target": s.epochs_to_target,
                "reference_epochs_to_target": s.reference_epochs,
                "speedup": s.speedup,
                "epoch_reduction": s.reduction,
                "delta_final": s.delta_final,
                "selection_val_final": s.selection,
                "run_id": s.trial.run_id,
            }
            for s in summaries
        ]
    )
