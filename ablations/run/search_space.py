"""The Optuna search's space as Ray Tune's distributions: the searched arm (each sample a trial of it) and one
distribution per ``search.space`` path."""

from __future__ import annotations

from typing import Any

from ablations.study import Study


def search_space(study: Study) -> dict[str, Any]:
    """Ray Tune's param space of the study's search phase (``Repeater`` adds the seed index)."""
    from ray import tune

    space: dict[str, Any] = {"trial": study.search_arm}
    for path, d in study.spec.search.space.items():
        if d.loguniform:
            space[path] = tune.loguniform(*d.loguniform)
        elif d.uniform:
            space[path] = tune.uniform(*d.uniform)
        elif d.int:
            space[path] = tune.randint(d.int[0], d.int[1] + 1)
        else:
            space[path] = tune.choice(d.choice)
    return space
