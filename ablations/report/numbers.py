"""Every number the report computes for a trial, declared once: how it is computed from the trial's curve and its
reference's, how a table shows it, what the legend says of it, and whether it is written back to MLflow.

``aggregate`` computes each trial's numbers and their means over seeds from ``NUMBERS``; ``tables`` builds its
columns, ``legend`` its definitions and ``writeback`` the ``summary/*`` and ``arm/*`` metrics from the same list.
A new number is one declaration here (with its formula in ``formulas`` when it needs one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from ablations.contract import declared, is_accuracy
from ablations.report.formulas import Curve, auc, epoch_reduction, epochs_to_target, rauc, speedup


@dataclass(frozen=True)
class Pairing:
    """What a trial's numbers are computed from: its curves and its reference's."""

    curve: Curve  # the target metric on the test split
    reference: Curve | None  # the reference trial's (paired) or the mean of its seeds' (unpaired); None: none
    fraction: float  # target = reference final x fraction
    selection: Curve | None  # the validation counterpart (what selection reads); None without a validation split

    @cached_property
    def target(self) -> float:
        return self.fraction * float(self.reference[1][-1])

    @cached_property
    def epochs(self) -> float | None:
        return epochs_to_target(self.curve, self.target)

    @cached_property
    def reference_epochs(self) -> float | None:
        return epochs_to_target(self.reference, self.target)


@dataclass(frozen=True)
class Number:
    """One number of a trial, and of a table row (its mean over seeds)."""

    key: str  # the trials CSV column; ``<key>_mean``, ``_ci_low``, ``_ci_high`` in the table CSV
    of: Callable[[Pairing], float | None]  # None: censored (never reached); NaN: undefined
    paired: bool = True  # needs the reference: without one it is ``absent``
    absent: float | None = math.nan  # its value without a reference (None: as if censored)
    censorable: bool = False  # the row's mean exists only when every seed has a value (else "> E")
    header: str | None = None  # the table column ("{name}": the metric's words, "{unit}", "{pp}"); None: no column
    scaled: bool = True  # in the metric's unit (x100 for an accuracy, 1 or 3 digits); else ``scale`` and ``digits``
    scale: float = 1.0
    digits: int = 3
    suffix: str = ""
    higher_is_better: bool | None = True  # which value is bold; None: never bold
    relative: bool = False  # a comparison with the reference: "ref" on reference rows, never bold there
    definition: str = ""  # the legend's bullet for it (a bullet may define several numbers)
    summary: bool = False  # written on each trial run as ``summary/<key>``
    arm: bool = False  # its mean written on the parent run as ``arm/<arm>[/<grid point>]/<key>``
    grouped: bool = True  # averaged over seeds into the table's rows

    def value(self, pairing: Pairing) -> float | None:
        if self.paired and pairing.reference is None:
            return self.absent
        return self.of(pairing)


def _last(curve: Curve | None) -> float:
    return float(curve[1][-1]) if curve is not None else math.nan


NUMBERS: tuple[Number, ...] = (
    Number("target", lambda p: p.target, grouped=False),
    Number(
        "final",
        lambda p: _last(p.curve),
        paired=False,
        header="Final {name}{unit}",
        summary=True,
        arm=True,
        definition="**Final**, **Best**: the target metric at the last epoch, and its best value over the run.",
    ),
    Number("best", lambda p: float(p.curve[1].max()), paired=False, header="Best{unit}", summary=True),
    Number(
        "auc",
        lambda p: auc(p.curve),
        paired=False,
        header="AUC{unit}",
        summary=True,
        arm=True,
        definition="**AUC**: trapezoidal area under the metric-vs-epoch curve from epoch 0 (the untrained model) to\n"
        "  the last epoch, divided by the span (a mean accuracy over training).",
    ),
    Number(
        "rauc",
        lambda p: rauc(p.curve, p.reference),
        header="RAUC",
        scaled=False,
        relative=True,
        summary=True,
        arm=True,
        definition="**RAUC**: AUC of the arm / AUC of its reference over the same epochs, paired by seed (our\n"
        "  definition); above 1 = learns faster or better.",
    ),
    Number(
        "epochs_to_target",
        lambda p: p.epochs,
        absent=None,
        censorable=True,
        header="Epochs to target (within one schedule)",
        scaled=False,
        digits=1,
        higher_is_better=False,
        summary=True,
        arm=True,
        definition="**Epochs to target (within one schedule)**: first epoch at which the metric reaches the target\n"
        "  (the same seed's reference final value x fraction), linearly interpolated between evaluations,\n"
        "  inside one cosine schedule; `> E` = some seed never reached it (censored, never averaged).\n"
        "  Late gains inside one schedule come from the learning rate annealing: this is not the paper's\n"
        "  figure. **Speed-up (within)** = reference / arm epochs-to-target and **epoch reduction (within)** =\n"
        "  1 - arm / reference, per seed where both reached it.",
    ),
    Number("reference_epochs_to_target", lambda p: p.reference_epochs, absent=None, grouped=False),
    Number(
        "speedup",
        lambda p: speedup(p.reference_epochs, p.epochs),
        absent=None,
        header="Speed-up (within)",
        scaled=False,
        digits=2,
        suffix="x",
        relative=True,
        summary=True,
        arm=True,
    ),
    Number(
        "epoch_reduction",
        lambda p: epoch_reduction(p.reference_epochs, p.epochs),
        absent=None,
        header="Epoch reduction (within, %)",
        scaled=False,
        scale=100.0,
        digits=1,
        relative=True,
    ),
    Number(
        "delta_final",
        lambda p: _last(p.curve) - _last(p.reference),
        header="Δ final{pp}",
        relative=True,
        definition="**Δ final**: arm final - reference final, paired by seed.",
    ),
    Number("selection_val_final", lambda p: _last(p.selection), paired=False, higher_is_better=None),
)
BY_KEY = {n.key: n for n in NUMBERS}
COLUMNS = tuple(n for n in NUMBERS if n.header)  # the main table's columns, in this order
SELECTION = "selection_val_final"  # what picks a table's best row: the validation metric's final, never the test's
CENSORED_BY = "epochs_to_target"  # a trial whose target was never reached is censored


def metric_words(metric: str) -> str:
    """How tables name ``metric`` ("Final <words>", "<words> @ 50 ep"): its declared header, else its last part."""
    m = declared(metric)
    return m.header if m is not None else metric.split("/")[-1].replace("_", " ")


def metric_scale(metric: str) -> tuple[float, int, str]:
    """(scale, digits, unit) of ``metric`` in tables: an accuracy in %, with 1 digit; anything else as is, 3."""
    return (100.0, 1, " (%)") if is_accuracy(metric) else (1.0, 3, "")
