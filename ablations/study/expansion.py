"""From a validated study to its trials: arms x (study grid x arm grid) x seeds, each a typed
``TrialConfig`` paired with its reference trial; the trials grouped into units, one Ray trial each
(``Study.units``: a lone trial, or up to ``resources.fuse`` trials trained as one stacked model); and
``Study.unit``, the one place a Ray trial's members (name, arm, seed, grid point or Optuna sample,
config) come from.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ablations.contract import BUDGET_AXIS
from ablations.study.messages import Problems
from ablations.study.schema import MAX_TRIALS, StudySpec
from mto import ConfigError, TrialConfig, flatten, fused_groups, to_dict

SAMPLE_SEED = "__trial_index__"  # Ray Tune's Repeater: which of the search seeds a repeat of a sample runs


@dataclass(frozen=True)
class TrialSpec:
    """One trial of a study: an arm, a seed and a point of the grid, with its resolved config."""

    name: str
    arm: str
    seed: int
    grid: dict[str, Any]
    config: TrialConfig = field(compare=False)
    reference: str = ""  # the trial it is compared with: its reference arm, same seed and study-grid point
    reference_arm: str = ""  # that trial's arm


@dataclass
class Study:
    spec: StudySpec
    source: str
    trials: list[TrialSpec]
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return self.spec.name

    def trial(self, name: str) -> TrialSpec:
        return next(t for t in self.trials if t.name == name)

    def resolve(self, params: dict[str, Any], trial_id: str = "") -> TrialSpec:
        """The trial a Ray trial runs, from Ray's config and trial id: the one place trial identity comes from.

        A grid trial's params are ``{"trial": name}``; an Optuna sample's are ``{"trial": arm,
        "__trial_index__": i, <dot path>: value ...}`` (Ray Tune's ``Repeater`` runs each sample once
        per seed of ``search_seeds``, ``i`` indexing them), named ``<arm>-s<seed>-o<trial id><sample>``
        and compared with the searched arm's reference at the same seed.

        Raises:
            ConfigError: the sample makes an invalid config.
        """
        name = params["trial"]
        if SAMPLE_SEED not in params:
            return self.trial(name)
        seed = self.spec.search_seeds[int(params[SAMPLE_SEED])]
        sample = {k: v for k, v in params.items() if k not in ("trial", SAMPLE_SEED)}
        shown = "".join(
            f"-{k.split('.')[-1]}={short_value(round(v, 4) if isinstance(v, float) else v)}"
            for k, v in sorted(sample.items())
        )
        ref_arm = self.spec.reference_for(name)
        return TrialSpec(
            f"{name}-s{seed}-o{trial_id.split('_')[-1]}{shown}",
            name,
            seed,
            sample,
            self.search_config(name, seed, sample),
            trial_name(ref_arm, seed, {}, {}),
            ref_arm,
        )

    @property
    def search_arm(self) -> str:
        return self.spec.search_arm

    @property
    def search_samples(self) -> int:
        """The trials the Optuna search draws: its samples, each run with every search seed (0 without a search)."""
        search = self.spec.search
        return search.num_samples * len(self.spec.search_seeds) if search.kind == "optuna" else 0

    def search_config(self, arm: str, seed: int, sample: dict[str, Any]) -> TrialConfig:
        """An arm's config with an Optuna sample applied (validated; raises ConfigError)."""
        return arm_config(self.spec, arm, {**sample, "train.seed": seed})

    @property
    def threads(self) -> int:
        """The CPU threads of a trial that sets none (``train.num_threads``): the CPUs it is given, rounded up."""
        return max(1, math.ceil(self.spec.resources.cpu))

    @functools.cached_property
    def units(self) -> dict[str, list[TrialSpec]]:
        """Unit name -> its trials, one Ray trial per unit, in study order of each unit's first trial: each
        trial alone, or with ``resources.fuse`` > 1 up to that many trials of one fusion key
        (``mto.training.fusable``). An Optuna sample is a unit of one (``unit``)."""
        groups = fused_groups([t.config for t in self.trials], self.spec.resources.fuse)
        units = [[self.trials[i] for i in g] for g in groups]
        return {unit_name(u): u for u in units}

    def unit(self, params: dict[str, Any], trial_id: str = "") -> list[TrialSpec]:
        """The members of the Ray trial with config ``params``: a grid unit's trials, or an Optuna sample's one."""
        if SAMPLE_SEED not in params and params["trial"] in self.units:
            return self.units[params["trial"]]
        return [self.resolve(params, trial_id)]


def with_threads(config: TrialConfig, threads: int) -> TrialConfig:
    """``config`` as a Ray trial runs it: ``threads`` CPU threads (``Study.threads``) unless it sets its own."""
    if config.train.num_threads is not None:
        return config
    return dataclasses.replace(config, train=dataclasses.replace(config.train, num_threads=threads))


def expand(spec: StudySpec, problems: Problems) -> list[TrialSpec]:
    """Arms x (study grid x arm grid) x seeds, each validated into a TrialConfig and paired with its reference;
    a trial whose config is invalid is a problem (and is left out)."""
    trials, names = [], set()
    base = to_dict(spec.base)
    axes_of, fixed_of = {}, {}
    study_grid = {**spec.grid, **({BUDGET_AXIS: spec.budgets} if spec.budgets else {})}
    for arm, overrides in spec.variants.items():
        fixed_of[arm], arm_grid = arm_overrides(overrides)
        axes_of[arm] = {**study_grid, **arm_grid}
    count = len(spec.seeds) * sum(math.prod(len(v) for v in axes.values()) for axes in axes_of.values())
    if count > MAX_TRIALS:
        problems.say(
            f"variants x grid x seeds: {count:,} trials, above the {MAX_TRIALS:,} a study may have; split it into "
            "several studies or give fewer grid values or seeds"
        )
        return []
    for arm in spec.variants:
        axes = axes_of[arm]
        keys = list(axes)
        ref = spec.reference_for(arm)
        for values in itertools.product(*(axes[k] for k in keys)):
            point = dict(zip(keys, values))
            for seed in spec.seeds:
                name = trial_name(arm, seed, point, axes)
                ref_name = trial_name(ref, seed, {k: point[k] for k in study_grid}, axes_of[ref])
                try:
                    cfg = validate_trial(apply_overrides(base, {**fixed_of[arm], **point, "train.seed": seed}))
                except ConfigError as err:
                    problems.say(f"variants.{arm} (trial {name}): {err}")
                    continue
                if name in names:
                    problems.say(f"variants.{arm}: trial {name} appears twice (duplicate grid values?)")
                names.add(name)
                trials.append(TrialSpec(name, arm, seed, point, cfg, ref_name, ref))
    return trials


def check_search_space(spec: StudySpec, problems: Problems) -> None:
    """Each end of each Optuna dimension (each choice), with the searched arm's other settings, is a valid trial:
    a sample outside the settings' bounds would otherwise fail, or run for practically ever, after the start."""
    if spec.search.kind != "optuna" or spec.search_arm not in spec.variants:
        return
    for path, d in spec.search.space.items():
        kind = next(k for k in ("loguniform", "uniform", "int", "choice") if getattr(d, k) is not None)
        for value in getattr(d, kind):
            try:
                arm_config(spec, spec.search_arm, {path: value})
            except ConfigError as err:
                problems.say(f"search.space.{path}.{kind}: the sample {path}={value!r} is an invalid trial: {err}")


def arm_config(spec: StudySpec, arm: str, overrides: dict[str, Any]) -> TrialConfig:
    """An arm's config (its fixed settings, not its grid) with dot-path ``overrides`` applied; raises ConfigError."""
    fixed, _ = arm_overrides(spec.variants[arm])
    return validate_trial(apply_overrides(to_dict(spec.base), {**fixed, **overrides}))


def arm_overrides(variant: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list]]:
    """An arm's fixed dot-path settings and its own grid (``grid.<path>: [values]``)."""
    flat = flatten(variant)
    fixed = {k: v for k, v in flat.items() if not k.startswith("grid.")}
    return fixed, {k[len("grid.") :]: v for k, v in flat.items() if k.startswith("grid.")}


def trial_name(arm: str, seed: int, point: dict[str, Any], axes: dict[str, list]) -> str:
    """``<arm>-s<seed>`` plus ``-<leaf>=<value>`` for each grid axis with more than one value."""
    extra = "".join(f"-{k.split('.')[-1]}={short_value(v)}" for k, v in point.items() if len(axes[k]) > 1)
    return f"{arm}-s{seed}{extra}"


def unit_name(trials: list[TrialSpec]) -> str:
    """A unit's name: its trial's, or ``<first member>+<K-1>`` for K fused trials."""
    return trials[0].name if len(trials) == 1 else f"{trials[0].name}+{len(trials) - 1}"


def short_value(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ",".join(map(str, v)) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)


# ---- helpers ---------------------------------------------------------------------------------
_TRIAL = TypeAdapter(TrialConfig)


def validate_trial(data: dict[str, Any]) -> TrialConfig:
    """Validate nested dicts into a TrialConfig; the first problem is raised as a ConfigError (one line naming the
    setting)."""
    try:
        return _TRIAL.validate_python(data)
    except ValidationError as err:
        e = err.errors()[0]
        cause = e.get("ctx", {}).get("error")
        if isinstance(cause, ConfigError):  # raised by the dataclass itself: it names its field
            raise cause from None
        raise ConfigError(".".join(str(p) for p in e["loc"]), e.get("input"), e["msg"]) from None


def apply_overrides(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of nested ``config`` with dot-path ``overrides`` set."""
    out = copy.deepcopy(config)
    for path, value in overrides.items():
        node = out
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
