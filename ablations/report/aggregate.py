"""From trial curves to ablation numbers: per-trial summaries, then per-arm means with 95% CIs over seeds.

Only complete trials enter; failed, unfinished and early-stopped ones are listed separately by the
report, never averaged in. Comparisons with the reference are paired by seed: each trial is
compared with the reference trial of the same seed (and study-grid point); when that one is
missing, with the mean of the reference's other seeds (marked unpaired).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ablations.report.metrics import (
    Curve,
    Interval,
    auc,
    epoch_reduction,
    epochs_to_target,
    mean_ci,
    mean_curve,
    rauc,
    speedup,
)
from ablations.report.reader import StudyRecord, TrialRecord


@dataclass
class TrialSummary:
    trial: TrialRecord
    paired: bool  # compared with the same seed's reference trial
    target: float  # the metric value to reach: reference final x fraction
    final: float
    best: float
    auc: float
    rauc: float
    epochs_to_target: float | None  # None = censored (never reached)
    reference_epochs: float | None  # the reference's own epochs-to-target
    speedup: float | None
    reduction: float | None
    delta_final: float  # final - reference final
    selection: float  # the validation counterpart's final value (NaN without a validation split)


def reference_curve(trial: TrialRecord, trials: dict[str, TrialRecord]) -> tuple[Curve | None, bool]:
    """The curve ``trial`` is compared with, and whether it is the same seed's (paired)."""
    ref = trials.get(trial.reference)
    if ref is not None and ref.complete:
        return ref.curve, True
    # The reference's other seeds at the same study-grid point, found by tags: the reference arm,
    # whose grid point is part of this trial's (a reference arm has no grid of its own).
    point = set(trial.grid.items())
    others = [
        t.curve for t in trials.values() if t.arm == trial.reference_arm and t.complete and set(t.grid.items()) <= point
    ]
    return (mean_curve(others), False) if others else (None, False)


def summarize_trial(trial: TrialRecord, reference: Curve | None, paired: bool, fraction: float) -> TrialSummary:
    curve = trial.curve
    final, best = float(curve[1][-1]), float(curve[1].max())
    selection = float(trial.val_curve[1][-1]) if trial.val_curve is not None else math.nan
    if reference is None:
        nan = math.nan
        return TrialSummary(trial, False, nan, final, best, auc(curve), nan, None, None, None, None, nan, selection)
    ref_final = float(reference[1][-1])
    target = fraction * ref_final
    ett, ref_ett = epochs_to_target(curve, target), epochs_to_target(reference, target)
    return TrialSummary(
        trial,
        paired,
        target,
        final,
        best,
        auc(curve),
        rauc(curve, reference),
        ett,
        ref_ett,
        speedup(ref_ett, ett),
        epoch_reduction(ref_ett, ett),
        final - ref_final,
        selection,
    )


def summarize(record: StudyRecord) -> list[TrialSummary]:
    """One summary per complete trial, in the study's order."""
    trials = record.by_name()
    rank = {n: i for i, n in enumerate(record.order)}
    out = []
    for t in sorted((t for t in record.trials if t.complete), key=lambda t: (rank.get(t.name, len(rank)), t.name)):
        out.append(summarize_trial(t, *reference_curve(t, trials), record.fraction))
    return out


@dataclass
class GroupRow:
    """One arm at one grid point, aggregated over its seeds."""

    arm: str
    grid: dict[str, str]
    is_reference: bool
    reference_arm: str  # the arm this row is compared with
    epochs: int
    final: Interval
    best: Interval
    auc: Interval
    rauc: Interval
    epochs_to_target: Interval | None  # None when some seed never reached the target
    reached: int  # seeds that reached the target
    speedup: Interval  # over seeds where both reached
    reduction: Interval
    delta_final: Interval
    selection: Interval  # the validation metric's final: what picks the best row, never the test metric
    summaries: list[TrialSummary]

    @property
    def n(self) -> int:
        return len(self.summaries)

    @property
    def label(self) -> str:
        return self.arm + "".join(f" {k.split('.')[-1]}={v}" for k, v in self.grid.items())


def aggregate(summaries: list[TrialSummary]) -> list[GroupRow]:
    """Group trials that differ only by seed; mean and 95% bootstrap CI of each number."""
    groups: dict[tuple, list[TrialSummary]] = {}
    for s in summaries:
        groups.setdefault(s.trial.group, []).append(s)
    rows = []
    for (arm, grid), items in groups.items():
        etts = [s.epochs_to_target for s in items]
        rows.append(
            GroupRow(
                arm,
                dict(grid),
                all(s.trial.name == s.trial.reference for s in items),
                items[0].trial.reference_arm,
                max(s.trial.epochs for s in items),
                mean_ci([s.final for s in items]),
                mean_ci([s.best for s in items]),
                mean_ci([s.auc for s in items]),
                mean_ci([s.rauc for s in items]),
                mean_ci(etts) if all(e is not None for e in etts) else None,
                sum(e is not None for e in etts),
                mean_ci([s.speedup for s in items if s.speedup is not None]),
                mean_ci([s.reduction for s in items if s.reduction is not None]),
                mean_ci([s.delta_final for s in items]),
                mean_ci([s.selection for s in items]),
                items,
            )
        )
    return rows


def shown_rows(rows: list[GroupRow], limit: int = 6) -> list[GroupRow]:
    """The rows worth a figure: every reference row, then the grid point of each other arm selected on
    the validation split (highest mean validation final), selected arms first, up to ``limit`` of
    those (more lines would be unreadable). Without a validation split, the first grid point of each
    arm in study order: the test metric never chooses."""
    refs = [r for r in rows if r.is_reference]
    best: dict[str, GroupRow] = {}
    for r in rows:
        if not r.is_reference and (r.arm not in best or _key(r) > _key(best[r.arm])):
            best[r.arm] = r
    return refs + sorted(best.values(), key=_key, reverse=True)[:limit]


def winner(rows: list[GroupRow]) -> GroupRow | None:
    """The row with the highest mean validation final, or None without a validation split."""
    scored = [r for r in rows if not math.isnan(r.selection.mean)]
    return max(scored, key=_key) if scored else None


def _key(r: GroupRow) -> float:
    return -math.inf if math.isnan(r.selection.mean) else r.selection.mean
