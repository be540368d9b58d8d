"""What the report says in words: the legend of its columns and a caption for each figure."""

from __future__ import annotations

from pathlib import Path

from ablations.contract import FINETUNE_TOP1, PROBE_METRICS
from ablations.report.numbers import NUMBERS
from ablations.report.record import TrialRecord
from mto import declared

_SPLITS = """\
- Tables report the **test** split (`eval/*`, `finetune/top1`); every choice of a best row reads the
  **validation** split (`val/*`), never the test split. Accuracies are in % here (MLflow holds them in [0, 1]).
"""
_BUDGETS = """\
- **Budget to target** (budget studies; the paper's sense): every arm is trained once per budget,
  each its own warm-up and cosine schedule. Per seed, the smallest budget whose final reaches the
  reference's full-budget final x fraction, interpolated between budgets (from the epoch-0 value at
  budget 0); censored when no budget reaches it. **Epoch reduction** = 1 - budget to target /
  the full budget (the paper's "about 50% fewer pre-training epochs").
"""
_CELLS = """\
- Cells: mean over seeds [95% percentile-bootstrap interval over seeds, 2,000 resamples], the same
  method for every table and figure band; no interval with fewer than 3 seeds. `(k/n)` = only k
  of the n seeds enter (the others censored or unpaired). Bold = best in its column.
"""


def definitions(metric: str) -> str:
    """The legend of the tables (Markdown): the target ``metric`` as declared (what it measures, when it is logged,
    which way is better), which split, which metric is the papers', then each declared number's definition in the
    order of the main table's columns, the budget table's, and how a cell reads."""
    probes = " and ".join(f"`{p}`" for p in PROBE_METRICS)
    proxies = (
        f"- `{FINETUNE_TOP1}` is the fine-tuned accuracy MIM papers report; {probes} are\n"
        "  frozen-feature probes, its proxies.\n"
    )
    numbers = "".join(f"- {n.definition}\n" for n in NUMBERS if n.definition)
    return _metric(metric) + _SPLITS + proxies + numbers + _BUDGETS + _CELLS


def step_fallbacks(trials: list[TrialRecord]) -> str:
    """A legend line when a trial's compiled step fell back (it trained on, ``ablation.step_fallback`` says how);
    "" when none did."""
    fell = sorted(t.name for t in trials if t.step_fallback)
    if not fell:
        return ""
    shown = ", ".join(f"`{n}`" for n in fell[:10]) + (f" and {len(fell) - 10} more" if len(fell) > 10 else "")
    return (
        f"- **Steps that fell back**: {len(fell)} of {len(trials)} trials could not run their compiled step and "
        f"went on without CUDA graphs or eagerly, from the state before the failed step ({shown}; why: each run's "
        "`ablation.step_fallback` tag). They computed the same steps another way (equal up to rounding), but their "
        "`perf/*` throughput is not the compiled step's.\n"
    )


def _metric(metric: str) -> str:
    m = declared(metric)
    if m is None:
        return f"- **Metric** `{metric}`: as the trials log it (a metric of a declared family, not declared alone).\n"
    better = "higher" if m.higher_is_better else "lower"
    proxy = " A proxy, not the papers' metric." if m.proxy else ""
    return f"- **Metric** `{m.name}`: {m.definition}; logged {m.when}; {better} is better.{proxy}\n"


CAPTIONS = {  # what to look at in each figure
    "learning_curves": "Learning curves: the higher and the earlier an arm's curve rises, the faster it learns; "
    "dashed lines are the targets its epochs-to-target is measured against.",
    "epochs_to_target": "Epochs to reach the target: further left is faster; an arrow `> E` marks an arm where some "
    "seed never reached it within its E epochs (censored).",
    "heterogeneity_depth": "Heterogeneity of masked vs visible tokens per layer: MTO should keep it high in the "
    "early layers, where the mask tokens would otherwise blur into the visible ones.",
    "budgets": "Final accuracy per budget, each budget its own schedule: where an arm's line crosses the dashed "
    "target (the reference's full-budget final), it has caught up; further left = fewer epochs.",
    "affinity_maps": "Affinity maps, masked tokens first: compare the off-diagonal masked-to-visible blocks between "
    "arms (each block normalised on its own, so its pattern is visible).",
}


def caption(path: Path) -> str:
    """One line (Markdown) saying what to look at in a figure."""
    return CAPTIONS.get(path.stem, path.stem.replace("_", " "))
