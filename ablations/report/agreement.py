"""Which cheap probe can stand in for fine-tuning: the rank agreement of each probe with fine-tuned accuracy.

No MIM paper measures this. Across a study's trials, at every epoch where both a probe (kNN, linear,
test split) and the fine-tuned top-1 were measured, Kendall's tau-b (scipy) between the two: 1 means
the probe orders every pair of (trial, epoch) points as fine-tuning does, 0 no better than chance.
Its interval is the report's one interval method, the 95% percentile bootstrap, here over trials:
all points of a trial are resampled together, since points of one trial are not independent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau

from ablations.report.formulas import MIN_SEEDS_FOR_INTERVAL, RESAMPLES, Curve


@dataclass(frozen=True)
class Agreement:
    """Kendall's tau-b of one probe against fine-tuned accuracy over ``points`` (trial, epoch) pairs of ``trials``
    trials, with its 95% percentile-bootstrap interval over trials (NaN bounds below 3 trials)."""

    probe: str
    tau: float
    low: float
    high: float
    points: int
    trials: int


def paired_points(probe: dict[str, Curve], finetuned: dict[str, Curve]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per trial (run id), the (probe, fine-tuned) values at the epochs where both were measured."""
    out = {}
    for run_id, ft in finetuned.items():
        if run_id not in probe:
            continue
        p = dict(zip(probe[run_id][0].tolist(), probe[run_id][1].tolist()))
        both = [(p[e], v) for e, v in zip(ft[0].tolist(), ft[1].tolist()) if e in p]
        if both:
            out[run_id] = (np.array([b[0] for b in both]), np.array([b[1] for b in both]))
    return out


def _tau(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan  # undefined: no pair can be ordered
    return float(kendalltau(x, y).statistic)


def rank_agreement(
    name: str, probe: dict[str, Curve], finetuned: dict[str, Curve], confidence: float = 0.95, seed: int = 0
) -> Agreement:
    """Kendall's tau-b between ``probe`` and ``finetuned`` curves (run id -> curve) over their shared points."""
    pairs = list(paired_points(probe, finetuned).values())
    x = np.concatenate([p[0] for p in pairs]) if pairs else np.array([])
    y = np.concatenate([p[1] for p in pairs]) if pairs else np.array([])
    low = high = math.nan
    if len(pairs) >= MIN_SEEDS_FOR_INTERVAL:
        rng = np.random.default_rng(seed)
        taus = []
        for _ in range(RESAMPLES):
            pick = rng.integers(0, len(pairs), size=len(pairs))
            taus.append(_tau(np.concatenate([pairs[i][0] for i in pick]), np.concatenate([pairs[i][1] for i in pick])))
        taus = np.array([t for t in taus if not math.isnan(t)])
        if taus.size:
            alpha = (1 - confidence) / 2
            low, high = (float(v) for v in np.quantile(taus, [alpha, 1 - alpha]))
    return Agreement(name, _tau(x, y), low, high, int(x.size), len(pairs))


def agreement_markdown(rows: list[Agreement], metric: str) -> str:
    """The report's section: one row per probe."""
    lines = [
        f"Kendall's tau-b between each probe and `{metric}` over the (trial, epoch) points where both were "
        "measured; 95% percentile-bootstrap interval over trials (shown from 3 trials on). 1 = the probe ranks "
        "every pair of points as fine-tuning does; a probe-based table can be trusted only as far as this.",
        "",
        "| Probe | Kendall's tau-b [95% CI] | Points | Trials |",
        "|---|---|---|---|",
    ]
    for a in rows:
        cell = (
            "–"
            if math.isnan(a.tau)
            else f"{a.tau:.2f}" + (f" [{a.low:.2f}, {a.high:.2f}]" if not math.isnan(a.low) else "")
        )
        lines.append(f"| `{a.probe}` | {cell} | {a.points} | {a.trials} |")
    return "\n".join(lines) + "\n"


def study_agreement(finetuned: dict[str, Curve], probes: dict[str, dict[str, Curve]]) -> list[Agreement]:
    """Each probe's agreement (``probes``: metric -> run id -> curve) with the fine-tuned curves (run id -> curve);
    empty when there are no probes (a study that did not fine-tune has none)."""
    return [rank_agreement(p, curves, finetuned) for p, curves in probes.items()]
