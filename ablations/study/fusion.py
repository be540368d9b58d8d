"""Which trials of a study train together as one stacked model (``resources.fuse``, ``mto.training.fused``).

The grid's trials are partitioned into *units*, one Ray trial each: a unit is one trial, or up to
``resources.fuse`` trials with the same ``mto.training.fusable.fusion_key`` (they differ only in seed,
learning rate, weight decay, clipping or MTO lambdas), taken in study order. A fused unit is named
``<first member>+<K-1>``; each member keeps its own name, MLflow run and curves. The Optuna
search (its samples arrive one at a time) is never fused.
"""

from __future__ import annotations

from ablations.study.expansion import Study, TrialSpec
from mto.training.fusable import fusion_key


def trial_units(study: Study) -> dict[str, list[TrialSpec]]:
    """Unit name -> its trials (one trial: its own name), in study order of each unit's first trial."""
    k = study.spec.resources.fuse
    open_groups: dict[str, list[TrialSpec]] = {}
    units: dict[str, list[TrialSpec]] = {}
    for t in study.trials:
        key = fusion_key(t.config) if k > 1 else None
        if key is None:
            units[t.name] = [t]
            continue
        group = open_groups.get(key)
        if group is None or len(group) == k:
            group = open_groups[key] = []
            units[t.name] = group  # renamed below once its size is known
        group.append(t)
    return {unit_name(g): g for g in units.values()}


def unit_name(trials: list[TrialSpec]) -> str:
    return trials[0].name if len(trials) == 1 else f"{trials[0].name}+{len(trials) - 1}"
