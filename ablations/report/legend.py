"""What the report says in words: the legend of its columns and a caption for each figure."""

from __future__ import annotations

from pathlib import Path

DEFINITIONS = """\
- Tables report the **test** split (`eval/*`, `finetune/top1`); every choice of a best row reads the
  **validation** split (`val/*`), never the test split. Accuracies are in % here (MLflow holds them in [0, 1]).
- `finetune/top1` is the fine-tuned accuracy MIM papers report; `eval/knn_top1` and `eval/linear_top1` are
  frozen-feature probes, its proxies.
- **Final**, **Best**: the target metric at the last epoch, and its best value over the run.
- **AUC**: trapezoidal area under the metric-vs-epoch curve from epoch 0 (the untrained model) to
  the last epoch, divided by the span (a mean accuracy over training).
- **RAUC**: AUC of the arm / AUC of its reference over the same epochs, paired by seed (our
  definition); above 1 = learns faster or better.
- **Epochs to target (within one schedule)**: first epoch at which the metric reaches the target
  (the same seed's reference final value x fraction), linearly interpolated between evaluations,
  inside one cosine schedule; `> E` = some seed never reached it (censored, never averaged).
  Late gains inside one schedule come from the learning rate annealing: this is not the paper's
  figure. **Speed-up (within)** = reference / arm epochs-to-target and **epoch reduction (within)** =
  1 - arm / reference, per seed where both reached it.
- **Δ final**: arm final - reference final, paired by seed.
- **Budget to target** (budget studies; the paper's sense): every arm is trained once per budget,
  each its own warm-up and cosine schedule. Per seed, the smallest budget whose final reaches the
  reference's full-budget final x fraction, interpolated between budgets (from the epoch-0 value at
  budget 0); censored when no budget reaches it. **Epoch reduction** = 1 - budget to target /
  the full budget (the paper's "about 50% fewer pre-training epochs").
- Cells: mean over seeds [95% percentile-bootstrap interval over seeds, 2,000 resamples], the same
  method for every table and figure band; no interval with fewer than 3 seeds. `(k/n)` = only k
  of the n seeds enter (the others censored or unpaired). Bold = best in its column.
"""


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
