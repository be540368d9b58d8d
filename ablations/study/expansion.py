"""From a validated study to its trials: arms x (study grid x arm grid) x seeds, each a typed
``TrialConfig`` paired with its reference trial; and ``Study.resolve``, the one place a Ray
trial's identity (name, arm, seed, grid point or Optuna sample, config) comes from.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any, Optional

from pydantic import TypeAdapter, ValidationError

from ablations.contract import BUDGET_AXIS, FINETUNE_TOP1, VAL_FINETUNE_TOP1, validation_twin
from ablations.study.feasibility import feasibility_problems
from ablations.study.messages import StudyError, describe, suggest
from ablations.study.schema import StudySpec
from mto.config import ConfigError, TrialConfig, setting_defaults
from mto.config.dicts import flatten, to_dict
from mto.methods import registry


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
        shown = "".join(f"-{k.split('.')[-1]}={short_value(round(v, 4) if isinstance(v, float) else v)}"
                        for k, v in sorted(sample.items()))
        ref_arm = self.spec.reference_for(name)
        return TrialSpec(f"{name}-s{seed}-o{trial_id.split('_')[-1]}{shown}", name, seed, sample,
                         self.search_config(name, seed, sample), trial_name(ref_arm, seed, {}, {}), ref_arm)

    @property
    def search_arm(self) -> str:
        return self.spec.search_arm

    def search_config(self, arm: str, seed: int, sample: dict[str, Any]) -> TrialConfig:
        """An arm's config with an Optuna sample applied (validated; raises ConfigError)."""
        fixed, _ = arm_overrides(self.spec.variants[arm])
        return _validate_trial(apply_overrides(to_dict(self.spec.base), {**fixed, **sample, "train.seed": seed}))


def validate_study(raw: dict[str, Any], source: str, lines: Optional[dict[tuple, int]] = None, *,
                   check_paths: bool = True) -> Study:
    lines = lines or {}
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as err:
        raise StudyError(source, [describe(e, lines) for e in err.errors()]) from None
    problems: list[str] = []
    arms = list(spec.variants)

    def problem(path: str, msg: str) -> None:
        line = lines.get(tuple(path.split(".")))
        problems.append(f"{path}{f' (line {line})' if line else ''}: {msg}")

    if spec.reference not in spec.variants:
        problem("target.reference", f"unknown arm {spec.reference!r}; arms are {', '.join(arms)}"
                + suggest(spec.reference, arms))
    for arm, ref in spec.target.reference_of.items():
        for where, name in ((f"target.reference_of.{arm}", arm), (f"target.reference_of.{arm}", ref)):
            if name not in spec.variants:
                problem(where, f"unknown arm {name!r}; arms are {', '.join(arms)}" + suggest(name, arms))
    cycle = reference_cycle(spec)
    if cycle:
        problem(f"target.reference_of.{cycle[0]}", f"{' -> '.join(cycle)} is a cycle: every chain of references must "
                f"end at an arm compared with nothing (target.reference {spec.reference!r})")
    if spec.budgets and (BUDGET_AXIS in spec.grid or any(BUDGET_AXIS in flatten(v) or f"grid.{BUDGET_AXIS}"
                                                         in flatten(v) for v in spec.variants.values())):
        problem("budgets", f"budgets set {BUDGET_AXIS} for every arm: remove {BUDGET_AXIS} from grid and variants")
    for path, values in spec.grid.items():
        _check_dot_path(f"grid.{path}", path, problem)
        if not values:
            problem(f"grid.{path}", "an empty list: give at least one value")
    for arm, overrides in spec.variants.items():
        flat = flatten(overrides)
        for path, value in flat.items():
            if path.startswith("grid."):
                _check_dot_path(f"variants.{arm}.{path}", path[5:], problem)
                if not isinstance(value, list) or not value:
                    problem(f"variants.{arm}.{path}", f"{value!r}: an arm's grid needs a non-empty list of values")
            else:
                _check_dot_path(f"variants.{arm}.{path}", path, problem)
    for arm in {spec.reference, *spec.target.reference_of.values()} & set(spec.variants):
        if "grid" in spec.variants[arm] or any(k.startswith("grid.") for k in spec.variants[arm]):
            problem(f"variants.{arm}.grid", "a reference arm cannot have its own grid (which point would the "
                                            "others be compared with?); use the study-level grid")
    if spec.search.kind == "optuna":
        if spec.grid:
            problem("grid", "an Optuna study takes no study-level grid (its samples could not be paired with a "
                            "reference point); put grids on arms")
        if not spec.search.space:
            problem("search.space", "optuna search needs at least one dimension (dot path -> distribution)")
        for path in spec.search.space:
            _check_dot_path(f"search.space.{path}", path, problem)
        if spec.search.arm is not None and spec.search.arm not in spec.variants:
            problem("search.arm", f"unknown arm {spec.search.arm!r}; arms are {', '.join(arms)}"
                    + suggest(spec.search.arm, arms))
        twin = validation_twin(spec.search.metric)
        if twin:
            problem("search.metric", f"{spec.search.metric!r} is measured on the test split, which only the tables "
                                     f"read; select on its validation twin {twin!r}")
        if spec.search.asha and spec.search.metric in (FINETUNE_TOP1, VAL_FINETUNE_TOP1):
            problem("search.asha", f"ASHA cuts at each epoch's report, and {spec.search.metric} arrives in a second "
                                   "report after it: select on a probe with ASHA, or remove search.asha")
        if spec.budgets:
            problem("budgets", "an Optuna study takes no budgets (its samples could not be paired across budgets)")
        missing = sorted(set(spec.search_seeds) - set(spec.seeds))
        if missing:
            problem("search.seeds", f"{missing} are not among the study's seeds {spec.seeds}: the samples' "
                                    "references run on the study's seeds")
    elif spec.search.space or spec.search.asha:
        problem("search.kind", "space and asha are for kind: optuna; a grid study crosses variants, grid and seeds")
    if problems:
        raise StudyError(source, problems)

    trials = _expand(spec, source)
    problems += feasibility_problems(spec, trials, lines)
    if check_paths:
        from mto.data.datasets import check_data  # torch: only once the study is otherwise valid

        checked = set()
        for t in trials:
            c = t.config
            checks = [((c.data.name, c.data.path), lambda: check_data(c.data))]
            preflight = registry.get(c.mim.method).preflight  # a method's checks that read files (DTM's teacher)
            if preflight is not None and not problems:
                checks.append(((repr(c.mim), repr(c.model), c.data.image_size, c.data.name), lambda: preflight(c)))
            for key, check in checks:
                if key not in checked:
                    checked.add(key)
                    try:
                        check()
                    except ConfigError as err:
                        problems.append(f"trial {t.name}: {err}")
    if problems:
        raise StudyError(source, problems)
    return Study(spec, source, trials, raw)


def _expand(spec: StudySpec, source: str) -> list[TrialSpec]:
    """Arms x (study grid x arm grid) x seeds, each validated into a TrialConfig and paired with its reference."""
    problems, trials, names = [], [], set()
    base = to_dict(spec.base)
    axes_of, fixed_of = {}, {}
    study_grid = {**spec.grid, **({BUDGET_AXIS: spec.budgets} if spec.budgets else {})}
    for arm, overrides in spec.variants.items():
        fixed_of[arm], arm_grid = arm_overrides(overrides)
        axes_of[arm] = {**study_grid, **arm_grid}
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
                    cfg = _validate_trial(apply_overrides(base, {**fixed_of[arm], **point, "train.seed": seed}))
                except ConfigError as err:
                    problems.append(f"variants.{arm} (trial {name}): {err}")
                    continue
                if name in names:
                    problems.append(f"variants.{arm}: trial {name} appears twice (duplicate grid values?)")
                names.add(name)
                trials.append(TrialSpec(name, arm, seed, point, cfg, ref_name, ref))
    if problems:
        raise StudyError(source, problems)
    return trials


def reference_cycle(spec: StudySpec) -> list[str]:
    """The first cycle of ``target.reference_of`` (arm -> its reference -> ... -> that arm), or []."""
    for start in spec.target.reference_of:
        chain = [start]
        while chain[-1] in spec.target.reference_of and spec.target.reference_of[chain[-1]] != chain[-1]:
            chain.append(spec.target.reference_of[chain[-1]])
            if chain[-1] in chain[:-1]:
                return chain[chain.index(chain[-1]):]
    return []


def arm_overrides(variant: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list]]:
    """An arm's fixed dot-path settings and its own grid (``grid.<path>: [values]``)."""
    flat = flatten(variant)
    fixed = {k: v for k, v in flat.items() if not k.startswith("grid.")}
    return fixed, {k[len("grid."):]: v for k, v in flat.items() if k.startswith("grid.")}


def trial_name(arm: str, seed: int, point: dict[str, Any], axes: dict[str, list]) -> str:
    """``<arm>-s<seed>`` plus ``-<leaf>=<value>`` for each grid axis with more than one value."""
    extra = "".join(f"-{k.split('.')[-1]}={short_value(v)}" for k, v in point.items() if len(axes[k]) > 1)
    return f"{arm}-s{seed}{extra}"


def short_value(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ",".join(map(str, v)) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)



# ---- helpers ---------------------------------------------------------------------------------
_TRIAL = TypeAdapter(TrialConfig)


def _validate_trial(data: dict[str, Any]) -> TrialConfig:
    """Validate nested dicts into a TrialConfig; the first problem is raised as a ConfigError."""
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


_PATHS = list(setting_defaults())


def _check_dot_path(where: str, path: str, problem) -> None:
    if path == "train.seed":
        problem(where, "seeds come from the study's seeds list, not from train.seed")
    elif path not in _PATHS:
        problem(where, f"unknown setting {path!r}" + suggest(path, _PATHS))
