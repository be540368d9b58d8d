"""From trial curves to ablation numbers: per-trial summaries, then per-arm means with 95% CIs over seeds.

Only complete trials enter; failed, unfinished and early-stopped ones are listed separately by the
report, never averaged in. Comparisons with the reference are paired by seed: each trial is
compared with the reference trial of the same seed (and study-grid point); when that one is
missing, with the mean of the reference's other seeds (marked unpaired).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ablations.report.formulas import Curve, Interval, mean_ci, mean_curve
from ablations.report.numbers import BY_KEY, CENSORED_BY, NUMBERS, SELECTION, Pairing
from ablations.report.record import StudyRecord, TrialRecord


@dataclass
class TrialSummary:
    """One complete trial's numbers (``numbers.NUMBERS``, by key; also as attributes: ``s.final``)."""

    trial: TrialRecord
    paired: bool  # compared with the same seed's reference trial
    values: dict[str, float | None]  # None = censored (never reached) or undefined without a reference

    def __getattr__(self, key: str) -> float | None:
        if key in BY_KEY and "values" in self.__dict__:
            return self.values[key]
        raise AttributeError(key)


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
    pairing = Pairing(trial.curve, reference, fraction, trial.val_curve)
    return TrialSummary(trial, paired and reference is not None, {n.key: n.value(pairing) for n in NUMBERS})


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
    """One arm at one grid point, aggregated over its seeds: each grouped number's mean and interval (also as
    attributes: ``row.rauc``); a censorable number is None when some seed never reached the target."""

    arm: str
    grid: dict[str, str]
    is_reference: bool
    reference_arm: str  # the arm this row is compared with
    epochs: int
    numbers: dict[str, Interval | None]
    reached: int  # seeds that reached the target
    summaries: list[TrialSummary]

    def __getattr__(self, key: str) -> Interval | None:
        if key in BY_KEY and "numbers" in self.__dict__:
            return self.numbers[key]
        raise AttributeError(key)

    @property
    def n(self) -> int:
        return len(self.summaries)

    @property
    def label(self) -> str:
        return self.arm + "".join(f" {k.split('.')[-1]}={v}" for k, v in self.grid.items())


def group_numbers(items: list[TrialSummary]) -> dict[str, Interval | None]:
    """Mean and 95% bootstrap interval over seeds of every grouped number (None and NaN values left out)."""
    out: dict[str, Interval | None] = {}
    for n in NUMBERS:
        if n.grouped:
            values = [s.values[n.key] for s in items]
            out[n.key] = None if n.censorable and any(v is None for v in values) else mean_ci(values)
    return out


def aggregate(summaries: list[TrialSummary]) -> list[GroupRow]:
    """Group trials that differ only by seed; mean and 95% bootstrap CI of each number."""
    groups: dict[tuple, list[TrialSummary]] = {}
    for s in summaries:
        groups.setdefault(s.trial.group, []).append(s)
    return [
        GroupRow(
            arm,
            dict(grid),
            all(s.trial.name == s.trial.reference for s in items),
            items[0].trial.reference_arm,
            max(s.trial.epochs for s in items),
            group_numbers(items),
            sum(s.values[CENSORED_BY] is not None for s in items),
            items,
        )
        for (arm, grid), items in groups.items()
    ]


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
    scored = [r for r in rows if not math.isnan(r.numbers[SELECTION].mean)]
    return max(scored, key=_key) if scored else None


def best_seed(row: GroupRow) -> TrialSummary | None:
    """The row's trial with the highest validation final (the first in study order on a tie), or None without a
    validation split: the one trial whose encoder stands for the row."""
    scored = [s for s in row.summaries if s.values[SELECTION] is not None and not math.isnan(s.values[SELECTION])]
    return max(scored, key=lambda s: s.values[SELECTION]) if scored else None


def _key(r: GroupRow) -> float:
    return -math.inf if math.isnan(r.numbers[SELECTION].mean) else r.numbers[SELECTION].mean
