"""The report's figures (matplotlib, PNG).

- learning curves per arm: mean over seeds with a 95% band, and the target line;
- heterogeneity versus depth per arm at chosen epochs (like the paper's Figure 1);
- affinity maps per layer, masked tokens first, each block normalised on its own (like its Figure 2);
- epochs-to-target per arm with 95% CIs, censored arms drawn as a hatched bar ``> E``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.collections
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ablations.report.aggregate import GroupRow  # noqa: E402
from ablations.report.budgets import BudgetRow  # noqa: E402
from ablations.report.formulas import MIN_SEEDS_FOR_INTERVAL, bootstrap_band  # noqa: E402
from ablations.report.numbers import metric_scale  # noqa: E402

DPI = 100


def _scale(metric: str) -> tuple[float, str]:
    scale, _, unit = metric_scale(metric)
    return scale, unit


def learning_curves(rows: list[GroupRow], metric: str, path: Path) -> Path:
    """Mean curve over seeds per row with its 95% bootstrap band (3+ seeds); dashed target lines of the references."""
    scale, unit = _scale(metric)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, row in enumerate(rows):
        curves = [s.trial.curve for s in row.summaries]
        epochs = curves[0][0]
        values = np.stack([np.interp(epochs, c[0], c[1]) for c in curves]) * scale
        mean, lo, hi = bootstrap_band(values)
        color = f"C{i % 10}"
        ax.plot(epochs, mean, color=color, lw=2 if row.is_reference else 1.5, label=f"{row.label} (n={row.n})")
        if row.n >= MIN_SEEDS_FOR_INTERVAL:
            ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, lw=0)
        if row.is_reference:
            target = np.nanmean([s.target for s in row.summaries]) * scale
            ax.axhline(target, color=color, ls="--", lw=1, label=f"target ({row.arm})")
    ax.set_xlabel("pre-training epoch")
    ax.set_ylabel(metric + unit)
    ax.set_title("Learning curves: mean over seeds, 95% bootstrap band where n >= 3", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def heterogeneity_depth(profiles: dict[str, dict[int, np.ndarray]], path: Path) -> Path:
    """``profiles[label][epoch]`` = mean heterogeneity per layer; one panel per epoch, one line per row."""
    epochs = sorted({e for p in profiles.values() for e in p})
    fig, axes = plt.subplots(1, len(epochs), figsize=(3.6 * len(epochs), 3.4), squeeze=False, sharey=True)
    for ax, epoch in zip(axes[0], epochs):
        for i, (label, by_epoch) in enumerate(profiles.items()):
            if epoch in by_epoch:
                h = by_epoch[epoch]
                ax.plot(np.arange(len(h)), h, marker="o", color=f"C{i % 10}", label=label)
        ax.set_title(f"epoch {epoch}")
        ax.set_xlabel("layer (0 = initial embedding)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("heterogeneity h (normalised entropy)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("Heterogeneity of masked vs visible tokens across depth")
    return _save(fig, path)


def affinity_maps(maps: dict[str, tuple[np.ndarray, int, int]], path: Path) -> Path:
    """``maps[label] = (affinity [L+1, N, N] masked-first, masked count, epoch)``; rows = labels, columns = layers,
    drawn as one image (one axes for all the maps: a figure of many rows is drawn at once)."""
    layers = max(m[0].shape[0] for m in maps.values())
    n = max(m[0].shape[1] for m in maps.values())
    step = n + max(1, n // 12)  # each map and the white gap after it
    mosaic = np.full((len(maps) * step, layers * step), np.nan)
    bounds = []  # the masked/visible boundary of each map: (x0, x1, y0, y1) of its two lines
    for r, (aff, masked, _) in enumerate(maps.values()):
        for l in range(aff.shape[0]):
            a = aff[l].copy()
            np.fill_diagonal(a, np.nan)  # self-affinity would dominate every map: hide it
            y, x, size = r * step, l * step, a.shape[0]
            mosaic[y : y + size, x : x + size] = np.nan_to_num(normalise_blocks(a, masked), nan=0.0)
            edge = masked - 0.5
            bounds += [
                [(x - 0.5, y + edge), (x + size - 0.5, y + edge)],
                [(x + edge, y - 0.5), (x + edge, y + size - 0.5)],
            ]
    fig, ax = plt.subplots(figsize=(1.9 * layers + 1.6, 1.9 * len(maps) + 1.0))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    ax.imshow(
        np.ma.masked_invalid(mosaic[: -step + n, : -step + n]), cmap=cmap, vmin=0, vmax=1, interpolation="nearest"
    )
    ax.add_collection(matplotlib.collections.LineCollection(bounds, colors="w", linewidths=0.6))
    centres = [i * step + (n - 1) / 2 for i in range(max(layers, len(maps)))]
    ax.set_xticks(centres[:layers], [f"layer {l}" for l in range(layers)], fontsize=9)
    ax.xaxis.tick_top()
    ax.set_yticks(centres[: len(maps)], [f"{label}\n(epoch {m[2]})" for label, m in maps.items()], fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.suptitle(
        "Affinity maps: masked tokens first (top-left block), diagonal hidden;\n"
        "each block (masked-masked, masked-visible, ...) min-max normalised on its own",
        fontsize=9,
    )
    return _save(fig, path)


def normalise_blocks(a: np.ndarray, masked: int) -> np.ndarray:
    """Min-max normalise each block of a masked-first map ``a [N, N]`` on its own (NaNs kept).

    The masked-to-visible blocks hold much smaller affinities than the visible-visible one; over
    the whole map they would all be one dark colour, though they are what heterogeneity is about."""
    out = np.full_like(a, np.nan, dtype=float)
    n = a.shape[0]
    for rows in (slice(0, masked), slice(masked, n)):
        for cols in (slice(0, masked), slice(masked, n)):
            block = a[rows, cols]
            if block.size and not np.all(np.isnan(block)):
                lo, hi = np.nanmin(block), np.nanmax(block)
                out[rows, cols] = (block - lo) / (hi - lo + 1e-12)
    return out


def epochs_to_target(rows: list[GroupRow], path: Path, limit: int = 40) -> Path:
    """Mean epochs-to-target with 95% CI per row; rows where some seed never reached it drawn as ``> E``."""
    rows = rows[:limit]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    for reference, color in ((True, "C0"), (False, "C1")):  # one errorbar call per colour: drawn at once
        ys = [y for y, r in enumerate(rows) if r.is_reference == reference and r.epochs_to_target is not None]
        ivs = [rows[y].epochs_to_target for y in ys]
        if ys:
            err = [[iv.mean - iv.low for iv in ivs], [iv.high - iv.mean for iv in ivs]]  # NaN: no interval, no bar
            ax.errorbar([iv.mean for iv in ivs], ys, xerr=err, fmt="o", color=color, capsize=3)
    censored = [y for y, r in enumerate(rows) if r.epochs_to_target is None]
    if censored:  # a hatched bar over the whole training and an arrow past its end
        widths = [rows[y].epochs for y in censored]
        ax.barh(censored, widths, height=0.5, color="none", edgecolor="gray", hatch="//", lw=0.8)
    for y in censored:
        row = rows[y]
        ax.annotate(
            "", xy=(row.epochs * 1.08, y), xytext=(row.epochs, y), arrowprops=dict(arrowstyle="->", color="gray")
        )
        text = f"> {row.epochs} ({row.reached}/{row.n} reached)"
        ax.text(row.epochs * 1.1, y, text, va="center", fontsize=8, color="dimgray")
    ax.set_yticks(range(len(rows)), [r.label for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.4, -0.6)  # top to bottom, every row clear of the axes
    ax.set_xlim(0, max(r.epochs for r in rows) * 1.6)  # room for the censored rows' labels
    ax.set_xlabel("epochs to reach the target (mean, 95% CI over seeds)")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def budget_curves(rows: list[BudgetRow], metric: str, fraction: float, path: Path) -> Path:
    """Final metric against the pre-training budget (each budget its own schedule), mean over seeds with
    the bootstrap interval where n >= 3; the reference's full-budget final x fraction as the target line."""
    scale, unit = _scale(metric)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, row in enumerate(rows):
        budgets = [b for b in row.budgets if b in row.finals]
        ivs = [row.finals[b] for b in budgets]
        color = f"C{i % 10}"
        ax.plot(
            budgets,
            [iv.mean * scale for iv in ivs],
            marker="o",
            color=color,
            lw=2 if row.is_reference else 1.5,
            label=row.label + (" (reference)" if row.is_reference else ""),
        )
        if all(iv.has_interval for iv in ivs):
            ax.fill_between(
                budgets, [iv.low * scale for iv in ivs], [iv.high * scale for iv in ivs], color=color, alpha=0.2, lw=0
            )
        if row.is_reference and budgets:
            ax.axhline(
                row.finals[budgets[-1]].mean * fraction * scale,
                color=color,
                ls="--",
                lw=1,
                label=f"target: {row.arm} at {budgets[-1]} epochs x {fraction:g}",
            )
    ax.set_xlabel("pre-training budget (epochs; each its own schedule)")
    ax.set_ylabel("final " + metric + unit)
    ax.set_title("Final accuracy per budget: where each arm reaches the reference's full-budget final", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
