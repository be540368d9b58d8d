"""Pre-training efficiency metrics on evaluation curves ``m(e)`` (defined in docs/method.md, "Metrics").

Each is a pure function of (epochs, values) arrays. A curve is what MLflow holds for one trial's
target metric: values at the evaluated epochs only, in epoch order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import stats

Curve = tuple[np.ndarray, np.ndarray]  # (epochs, values), epochs increasing


def is_accuracy(metric: str) -> bool:
    """Whether a metric is an accuracy in [0, 1] (shown in % by tables and figures)."""
    return metric.endswith("top1") or "acc" in metric


def as_curve(epochs: Sequence[float], values: Sequence[float]) -> Curve:
    e, v = np.asarray(epochs, dtype=float), np.asarray(values, dtype=float)
    order = np.argsort(e, kind="stable")
    return e[order], v[order]


def auc(curve: Curve, start: Optional[float] = None, end: Optional[float] = None) -> float:
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


def epochs_to_target(curve: Curve, target: float) -> Optional[float]:
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


def speedup(reference_epochs: Optional[float], method_epochs: Optional[float]) -> Optional[float]:
    """Reference epochs-to-target / method epochs-to-target (None when either is censored)."""
    if reference_epochs is None or method_epochs is None or method_epochs <= 0:
        return None
    return reference_epochs / method_epochs


def epoch_reduction(reference_epochs: Optional[float], method_epochs: Optional[float]) -> Optional[float]:
    """``1 - method / reference``: the paper's "about 50% fewer epochs" (None when either is censored)."""
    if reference_epochs is None or method_epochs is None or reference_epochs <= 0:
        return None
    return 1.0 - method_epochs / reference_epochs


@dataclass(frozen=True)
class Interval:
    """Mean and 95% bootstrap confidence interval over seeds (``n`` values)."""

    mean: float
    low: float
    high: float
    n: int


def mean_ci(values: Sequence[float], confidence: float = 0.95, seed: int = 0) -> Interval:
    """Mean with a percentile bootstrap interval (scipy.stats.bootstrap) over the given seeds' values.

    One value gives no interval (NaN bounds); identical values give a zero-width one.
    """
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if x.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    m = float(x.mean())
    if x.size == 1:
        return Interval(m, math.nan, math.nan, 1)
    if np.ptp(x) == 0:
        return Interval(m, m, m, int(x.size))
    # 2,000 resamples: ample for a percentile interval over a handful of seeds (5 seeds have only
    # 3,125 distinct resamples), and it keeps a 1,000-trial report fast.
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, method="percentile", n_resamples=2000,
                          rng=np.random.default_rng(seed))
    return Interval(m, float(res.confidence_interval.low), float(res.confidence_interval.high), int(x.size))


def band(values: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-epoch mean and Student-t interval of ``values`` ``[seeds, epochs]``, for curve plots.

    (A t-interval, not a bootstrap: one bootstrap per plotted point would be slow and add nothing.)
    """
    mean = values.mean(axis=0)
    n = values.shape[0]
    if n < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def mean_curve(curves: list[Curve]) -> Curve:
    """Point-wise mean of curves on the first curve's epochs (others interpolated)."""
    epochs = curves[0][0]
    return epochs, np.mean([np.interp(epochs, c[0], c[1]) for c in curves], axis=0)
