"""A study's Ray Tune experiments, its phases, in order: ``arms`` (one Ray trial per unit of the study's arms x
grid x seeds), then ``search`` (Optuna samples of the searched arm on every search seed, with ASHA when asked)."""

from __future__ import annotations

from typing import Any

from ablations.contract import EPOCH, OBJECTIVE
from ablations.run.files import safe_name
from ablations.run.search_space import search_space
from ablations.study import Study, unit_name

Phase = tuple[str, dict[str, Any], dict[str, Any]]  # (name, param space, TuneConfig kwargs)


class TrialNamer:
    """Ray's trial names and folder names: the unit's (``Study.unit``; picklable: Ray stores it with the tuner)."""

    def __init__(self, study: Study):
        self.study = study

    def name(self, trial: Any) -> str:
        return unit_name(self.study.unit(trial.config, trial.trial_id))

    def dirname(self, trial: Any) -> str:
        return safe_name(self.name(trial))


def phases(study: Study) -> list[Phase]:
    """(name, param space, TuneConfig kwargs) of each Ray Tune experiment of the study."""
    from ray import tune

    namer = TrialNamer(study)
    # reuse_actors: a worker that ended a trial starts the next one (no new process importing torch per trial)
    common = dict(
        max_concurrent_trials=study.spec.max_concurrent,
        trial_name_creator=namer.name,
        trial_dirname_creator=namer.dirname,
        reuse_actors=True,
    )
    found = [("arms", {"trial": tune.grid_search(list(study.units))}, common)]  # one Ray trial per unit
    search = study.spec.search
    if search.kind == "optuna":
        import optuna
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search import Repeater
        from ray.tune.search.optuna import OptunaSearch

        # Each sample runs on every search seed; Optuna sees the mean objective over them.
        seeds = len(study.spec.search_seeds)
        searcher = Repeater(
            OptunaSearch(metric=OBJECTIVE, mode=search.mode, sampler=optuna.samplers.TPESampler(seed=0)),
            repeat=seeds,
            set_index=True,
        )
        kwargs = dict(common, search_alg=searcher, num_samples=study.search_samples)
        if search.asha:
            epochs = study.search_config(study.search_arm, study.spec.seeds[0], {}).train.epochs
            kwargs["scheduler"] = ASHAScheduler(
                time_attr=EPOCH,
                metric=OBJECTIVE,
                mode=search.mode,
                max_t=epochs,
                grace_period=search.asha.grace_period,
                reduction_factor=search.asha.reduction_factor,
            )
        found.append(("search", search_space(study), kwargs))
    return found
