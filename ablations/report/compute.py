"""The report's second step: everything it shows, computed from the study's record, with no I/O.

Per trial the declared numbers (``aggregate``), per arm and grid point their means over seeds, the budget
table's rows when the study has several budgets, the probes' agreement with fine-tuning when it fine-tuned,
the rows the figures draw and the notes a reader needs (``compute_report``); then, once the reader has read
what the figures draw for the trials they draw alone (``drawn``), heterogeneity per layer and the affinity
maps (``add_figures``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ablations.contract import FINETUNE_TOP1, HETERO_PREFIX, PROBE_METRICS, SYNTHETIC_DATA, validation_twin
from ablations.report.aggregate import GroupRow, TrialSummary, aggregate, best_seed, shown_rows, summarize, winner
from ablations.report.agreement import Agreement, study_agreement
from ablations.report.budgets import BudgetRow, budget_rows, budget_table
from ablations.report.formulas import MIN_SEEDS_FOR_INTERVAL, Curve
from ablations.report.record import HETERO_SEEDS, Affinity, ReportError, StudyRecord, TrialRecord
from ablations.report.tables import AblationTable, ablation_table


def chosen_epochs(available: list[int], wanted: list[int] | None) -> list[int]:
    """The epochs the heterogeneity figure shows: the wanted ones that were evaluated, else first, middle and last."""
    if wanted:
        return [e for e in wanted if e in available] or available[-1:]
    if len(available) <= 3:
        return available
    return [available[0], available[len(available) // 2], available[-1]]


@dataclass
class Report:
    """Everything a report shows, computed from ``record``."""

    record: StudyRecord
    summaries: list[TrialSummary]
    rows: list[GroupRow]
    table: AblationTable
    left_out: list[TrialRecord]
    budget_rows: list[BudgetRow] = field(default_factory=list)
    budget_table: AblationTable | None = None  # only for a study with several budgets
    agreement: list[Agreement] = field(default_factory=list)  # probes against fine-tuning (a study that fine-tuned)
    figure_rows: list[GroupRow] = field(default_factory=list)  # the rows of the figures (a budget study: full budget)
    shown: list[GroupRow] = field(default_factory=list)  # those a figure of curves draws (``shown_rows``)
    profiles: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # row -> epoch -> heterogeneity/layer
    affinity: dict[str, Affinity] = field(default_factory=dict)  # "<row> s<seed>" -> its first seed's latest maps
    heterogeneity_epochs: list[int] = field(default_factory=list)  # the epochs the heterogeneity figure shows
    files: list = field(default_factory=list)  # the files rendered (``render``)
    folder: object = None  # where they were written

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
        best, trial = self.selected_row, self.selected
        if best is None:
            out.append("No validation metric was logged (no validation split): no row is selected as best.")
        else:
            out.append(
                f"Selected on validation ({validation_twin(self.record.metric)}, mean final over seeds): {best.label}."
            )
        if trial is not None:
            kept = f"its encoder is `runs:/{trial.run_id}/{trial.encoder}`" if trial.encoder else "it kept no encoder"
            out.append(f"Its seed selected on validation: trial {trial.name}, run {trial.run_id}; {kept}.")
        running = [t for t in self.record.trials if t.running]
        if running:
            out.append(
                f"{len(running)} trial(s) still running when the study was read ({self.record.read_at}): this report "
                f"is a snapshot of the {len(self.summaries)} complete then; the trials left out say how far each was."
            )
        if self.record.unread:
            out.append(f"{self.record.unread[0].upper()}{self.record.unread[1:]}: the figure is left out.")
        return out

    @property
    def selected_row(self) -> GroupRow | None:
        """The row selected on validation (the highest mean validation final; a budget study's at its full budget),
        or None without a validation split."""
        full = max(r.epochs for r in self.rows) if self.budget_rows else None  # a budget study: the full budget
        return winner([r for r in self.rows if full is None or r.epochs == full])

    @property
    def selected(self) -> TrialRecord | None:
        """The selected row's trial with the highest validation final: the trial whose encoder the study offers."""
        row = self.selected_row
        best = best_seed(row) if row is not None else None
        return best.trial if best is not None else None

    def left_out_lines(self) -> list[str]:
        """One Markdown bullet per trial left out of the aggregates, with the reason."""
        return [f"- {t.name}: {t.why_left_out()}" for t in sorted(self.left_out, key=lambda t: t.name)]


def compute_report(record: StudyRecord) -> Report:
    """The report of ``record``, but for the figures' heterogeneity and affinity maps (``add_figures``).

    Raises:
        ReportError: no trial is complete.
    """
    summaries = summarize(record)
    if not summaries:
        running = sum(t.running for t in record.trials)
        raise ReportError(
            "no trial is complete yet"
            + (f" ({running} of {len(record.trials)} still running)" if running else "")
            + ": nothing to aggregate"
        )
    rows = aggregate(summaries)
    budgets = budget_rows(summaries, record.fraction)
    finetuned, probes = _finetuning(record, summaries)
    side = probes if record.metric not in PROBE_METRICS else {}  # the probes beside fine-tuned accuracy
    report = Report(
        record,
        summaries,
        rows,
        ablation_table(rows, record.metric),
        [t for t in record.trials if not t.complete],
        budgets,
        budget_table(budgets, record.metric, side) if budgets else None,
        study_agreement(finetuned, probes),
    )
    if budgets:  # curves and profiles of the full-budget runs; budgets get their own figure
        full = max(r.epochs for r in rows)
        rows = [r for r in rows if r.epochs == full]
    report.figure_rows, report.shown = rows, shown_rows(rows)
    return report


def drawn(report: Report) -> tuple[list[TrialRecord], list[TrialRecord]]:
    """The trials the figures draw from: the first ``HETERO_SEEDS`` seeds of each shown row (heterogeneity per
    layer), and the first one (affinity maps)."""
    hetero = [s.trial for row in report.shown for s in row.summaries[:HETERO_SEEDS]]
    return hetero, [row.summaries[0].trial for row in report.shown]


def add_figures(report: Report, epochs: list[int] | None = None) -> None:
    """The figures' heterogeneity per layer and affinity maps, from the record; ``epochs``: the heterogeneity
    figure's (default: the study's ``report_epochs``)."""
    record = report.record
    report.profiles = _heterogeneity_profiles(
        record, report.shown, epochs if epochs is not None else record.report_epochs
    )
    report.heterogeneity_epochs = sorted({e for by_epoch in report.profiles.values() for e in by_epoch})
    report.affinity = {
        f"{row.label} s{row.summaries[0].trial.seed}": record.affinity[row.summaries[0].trial.run_id]
        for row in report.shown
        if row.summaries[0].trial.run_id in record.affinity
    }


def _finetuning(record: StudyRecord, summaries: list[TrialSummary]) -> tuple[dict[str, Curve], dict[str, dict]]:
    """``finetune/top1`` curves (run id -> curve) and each logged probe's (metric -> run id -> curve) of the
    complete trials, in the study's order, when the study fine-tuned; else both empty."""
    if FINETUNE_TOP1 not in record.curves:
        return {}, {}
    ids = [s.trial.run_id for s in summaries]
    in_order = lambda curves: {i: curves[i] for i in ids if i in curves}  # noqa: E731
    probes = {p: in_order(record.curves[p]) for p in PROBE_METRICS if p in record.curves}
    return in_order(record.curves[FINETUNE_TOP1]), probes


def _heterogeneity_profiles(
    record: StudyRecord, rows: list[GroupRow], wanted: list[int] | None
) -> dict[str, dict[int, np.ndarray]]:
    """Mean over (up to ``HETERO_SEEDS``) seeds of ``hetero/lNN`` at the chosen epochs, per shown row."""
    trials = [s.trial for row in rows for s in row.summaries[:HETERO_SEEDS]]
    keys = sorted({k for t in trials for k in t.metric_keys if k.startswith(HETERO_PREFIX)})
    curves = {k: record.curves.get(k, {}) for k in keys}
    out: dict[str, dict[int, np.ndarray]] = {}
    for row in rows:
        per_trial = [
            [curves[k][s.trial.run_id] for k in keys]
            for s in row.summaries[:HETERO_SEEDS]
            if keys and all(s.trial.run_id in curves[k] for k in keys)
        ]
        if not per_trial:
            continue
        available = [int(e) for e in per_trial[0][0][0]]
        out[row.label] = {
            e: np.mean([[np.interp(e, c[0], c[1]) for c in trial] for trial in per_trial], axis=0)
            for e in chosen_epochs(available, wanted)
        }
    return out
