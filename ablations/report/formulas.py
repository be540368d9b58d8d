"""Pre-training efficiency formulas on evaluation curves ``m(e)`` (defined in docs/metrics.md, "What each figure
means").

Each is a pure function of (epochs, values) arrays. A curve is what MLflow holds for one trial's
target metric: values at the evaluated epochs only, in epoch order.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Curve = tuple[np.ndarray, np.ndarray]  # (epochs, values), epochs increasing


def as_curve(epochs: Sequence[float], values: Sequence[float]) -> Curve:
    e, v = np.asarray(epochs, dtype=float), np.asarray(values, dtype=float)
    order = np.argsort(e, kind="stable")
    return e[order], v[order]


def auc(curve: Curve, start: float | None = None, end: float | None = None) -> float:
    """Trapezoidal area of ``m`` over ``[start, end]`` divided by the span: a mean accuracy.

    Defaults to the curve's own first and last evaluated epochs; a single point gives its value.
    Bounds inside the curve are linearly interpolated.
    """
    e, v = curve
    lo = e[0] if start is None else start
    hi = e[-1] if end is None else end
    if hi <= lo:
        return float(np.interp(lo, e, v))
    inside = (e > lo) & (e < hi)
    xs = np.concatenate([[lo], e[inside], [hi]])
    ys = np.interp(xs, e, v)
    return float(np.trapezoid(ys, xs) / (hi - lo))


def rauc(curve: Curve, reference: Curve) -> float:
    """``AUC(method) / AUC(reference)`` over the epochs both cover (our definition; > 1 = faster/better)."""
    lo, hi = max(curve[0][0], reference[0][0]), min(curve[0][-1], reference[0][-1])
    return auc(curve, lo, hi) / auc(reference, lo, hi)


def epochs_to_target(curve: Curve, target: float) -> float | None:
    """The first epoch at which ``m`` reaches ``target``, linearly interpolated between evaluations.

    Returns None when the curve never reaches it (censored: report ``> E``, never a number).
    A curve at or above the target at its first evaluation reaches it at that epoch.
    """
    e, v = curve
    above = np.nonzero(v >= target)[0]
    if above.size == 0:
        return None
    i = int(above[0])
    if i == 0:
        return float(e[0])
    e0, e1, v0, v1 = e[i - 1], e[i], v[i - 1], v[i]
    return float(e0 + (target - v0) / (v1 - v0) * (e1 - e0))


def speedup(reference_epochs: float | None, method_epochs: float | None) -> float | None:
    """Reference epochs-to-target / method epochs-to-target (None when either is censored)."""
    if reference_epochs is None or method_epochs is None or method_epochs <= 0:
        return None
    return reference_epochs / method_epochs


def epoch_reduction(reference_epochs: float | None, method_epochs: float | None) -> float | None:
    """``1 - method / reference``: the paper's "about 50% fewer epochs" (None when either is censored)."""
    if reference_epochs is None or method_epochs is None or reference_epochs <= 0:
        return None
    return 1.0 - method_epochs / reference_epochs


def budget_to_target(
    budgets: Sequence[float], finals: Sequence[float], target: float, start: float | None = None
) -> float | None:
    """The pre-training budget at which separately scheduled runs reach ``target`` (the paper's sense).

    Each budget is its own run, warmed up and annealed to its own end; ``finals[i]`` is the final
    metric of the run with ``budgets[i]`` epochs. The answer is interpolated linearly between the
    last budget below the target and the first at or above it; ``start`` is the value before any
    training (the epoch-0 evaluation: a budget of 0), so a smallest budget already above the
    target is interpolated from 0. None when no budget reaches it (censored).
    """
    b, v = as_curve(budgets, finals)
    if start is not None:
        b, v = np.concatenate([[0.0], b]), np.concatenate([[start], v])
    return epochs_to_target((b, v), target)


MIN_SEEDS_FOR_INTERVAL = 3  # below this, a bootstrap over seeds says nothing: no interval is shown
RESAMPLES = 2000  # ample for a percentile interval over a handful of seeds (5 seeds: 3,125 distinct resamples)


@dataclass(frozen=True)
class Interval:
    """Mean over ``n`` seeds with its 95% percentile-bootstrap interval (NaN bounds when ``n`` < 3)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))


def bootstrap_band(
    values: np.ndarray, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and percentile-bootstrap interval over seeds of ``values`` ``[seeds, points]``, per point.

    The one interval method of every table and figure: seeds are resampled with replacement
    (the same resamples for every point, vectorised), the interval is the percentile range of the
    resampled means. With fewer than ``MIN_SEEDS_FOR_INTERVAL`` seeds the bounds are NaN: two
    seeds give at most three distinct resampled means, which is no interval at all.
    """
    x = np.asarray(values, dtype=float)
    mean = x.mean(axis=0)
    nan = np.full_like(mean, math.nan)
    if x.shape[0] < MIN_SEEDS_FOR_INTERVAL:
        return mean, nan, nan
    means = x[_resamples(x.shape[0], seed)].mean(axis=1)  # [resamples, points]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha], axis=0)
    return mean, low, high


@functools.lru_cache(maxsize=64)
def _resamples(n: int, seed: int) -> np.ndarray:
    """``[RESAMPLES, n]``: the seeds of each resample of ``n`` seeds, drawn with replacement; drawn once per ``n``
    (a report computes thousands of intervals over the same few seed counts)."""
    drawn = np.random.default_rng(seed).integers(0, n, size=(RESAMPLES, n))
    drawn.setflags(write=False)
    return drawn


def mean_ci(values: Sequence[float | None], confidence: float = 0.95, seed: int = 0) -> Interval:
    """Mean and ``bootstrap_band`` interval of one number per seed (None and NaN values are left out)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if x.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean, low, high = bootstrap_band(x[:, None], confidence, seed)
    return Interval(float(mean[0]), float(low[0]), float(high[0]), int(x.size))


def mean_curve(curves: list[Curve]) -> Curve:
    """Point-wise mean of curves on the first curve's epochs (others interpolated)."""
    epochs = curves[0][0]
    return epochs, np.mean([np.interp(epochs, c[0], c[1]) for c in curves], axis=0)
