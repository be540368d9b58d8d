"""Epochs-to-target in the paper's sense: separately scheduled budgets, not points inside one run.

A budget study runs every arm once per budget (``budgets: [25, 50, 75, 100]`` is a grid over
``train.epochs``), each run warmed up and annealed to its own end. Per seed, an arm's finals at
the budgets form a curve over budget; the target is the same seed's reference final at the
reference's full (largest) budget x fraction; the budget to reach it is interpolated between
budgets (``formulas.budget_to_target``), from the untrained model's epoch-0 value at budget 0.
The epoch reduction is then ``1 - budget to target / full budget``: the paper's "about 50% fewer
pre-training epochs" (MTO at 400 against the baseline at 800).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from ablations.contract import BUDGET_AXIS
from ablations.report.aggregate import TrialSummary
from ablations.report.formulas import Curve, Interval, budget_to_target, mean_ci
from ablations.report.numbers import metric_scale, metric_words
from ablations.report.tables import AblationTable, interval_cell


@dataclass
class BudgetRow:
    """One arm (at one point of the other grid axes) over every budget, aggregated over seeds."""

    arm: str
    grid: dict[str, str]  # the grid point without the budget axis
    is_reference: bool
    reference_arm: str
    budgets: list[int]
    finals: dict[int, Interval]  # budget -> final metric over seeds
    to_target: Interval  # budget to reach the target, over the seeds that reached it
    reached: int
    seeds: int
    reduction: Interval  # 1 - budget to target / the reference's full budget, over the seeds that reached it
    per_seed: dict[int, float | None] = field(default_factory=dict)  # seed -> budget to target (None: censored)
    runs: dict[int, list[TrialSummary]] = field(default_factory=dict)  # budget -> its trials (one per seed)

    @property
    def label(self) -> str:
        return self.arm + "".join(f" {k.split('.')[-1]}={v}" for k, v in self.grid.items())


def is_budget_study(summaries: list[TrialSummary]) -> bool:
    """Whether the trials were run at more than one budget."""
    return len({s.trial.grid.get(BUDGET_AXIS) for s in summaries} - {None}) > 1


def _start(summary: TrialSummary) -> float | None:
    """The epoch-0 value (the untrained model), when the curve has one."""
    epochs, values = summary.trial.curve
    return float(values[0]) if epochs[0] == 0 else None


def budget_rows(summaries: list[TrialSummary], fraction: float) -> list[BudgetRow]:
    """The budget table's rows, in study order; empty unless the study has several budgets."""
    if not is_budget_study(summaries):
        return []
    # (arm, other grid point) -> seed -> budget -> summary
    groups: dict[tuple, dict[int, dict[int, TrialSummary]]] = {}
    for s in summaries:
        other = tuple(sorted((k, v) for k, v in s.trial.grid.items() if k != BUDGET_AXIS))
        groups.setdefault((s.trial.arm, other), {}).setdefault(s.trial.seed, {})[int(s.trial.epochs)] = s
    rows = []
    for (arm, other), by_seed in groups.items():
        any_summary = next(iter(next(iter(by_seed.values())).values()))
        ref_arm = any_summary.trial.reference_arm or arm
        ref = _reference_group(groups, ref_arm, dict(other))
        budgets = sorted({b for runs in by_seed.values() for b in runs})
        per_seed: dict[int, float | None] = {}
        reductions = []
        full = max((b for runs in (ref or {}).values() for b in runs), default=None)
        for seed, runs in by_seed.items():
            ref_runs = (ref or {}).get(seed)
            if not ref_runs or full not in ref_runs:
                continue  # no paired full-budget reference for this seed: not compared
            target = fraction * ref_runs[full].final
            bs = sorted(runs)
            per_seed[seed] = budget_to_target(bs, [runs[b].final for b in bs], target, _start(runs[bs[0]]))
            if per_seed[seed] is not None:
                reductions.append(1.0 - per_seed[seed] / full)
        reached = [v for v in per_seed.values() if v is not None]
        at_budget = {b: [runs[b] for runs in by_seed.values() if b in runs] for b in budgets}
        rows.append(
            BudgetRow(
                arm,
                dict(other),
                arm == ref_arm,
                ref_arm,
                budgets,
                {b: mean_ci([s.final for s in trials]) for b, trials in at_budget.items()},
                mean_ci(reached),
                len(reached),
                len(per_seed),
                mean_ci(reductions),
                per_seed,
                at_budget,
            )
        )
    return rows


def _reference_group(groups: dict, ref_arm: str, point: dict[str, str]) -> dict | None:
    """The reference arm's runs at the same point of the other grid axes (the reference has no grid of its own)."""
    for (arm, other), by_seed in groups.items():
        if arm == ref_arm and set(other) <= set(point.items()):
            return by_seed
    return None


def budget_table(rows: list[BudgetRow], metric: str, side: dict[str, dict[str, Curve]] | None = None) -> AblationTable:
    """Final metric per budget (each budget its own schedule) and the budget to reach the reference's
    full-budget final, with the epoch reduction in the paper's sense; then, as side columns, each metric of
    ``side`` (metric -> run id -> curve: the probes beside fine-tuning) at the end of each budget."""
    side = side or {}
    scale, digits, unit = metric_scale(metric)
    budgets = sorted({b for r in rows for b in r.budgets})
    axes = sorted({k for r in rows for k in r.grid})
    headers = [
        "Arm",
        *[a.split(".")[-1] for a in axes],
        "Compared with",
        "Seeds",
        *[f"Final @ {b} ep{unit}" for b in budgets],
        "Budget to target (epochs)",
        "Epoch reduction (%)",
        *[f"{metric_words(m)} @ {b} ep{unit}" for m in side for b in budgets],
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
