"""Rules between a study's fields, refused before anything starts: arms named in ``target`` exist, references
form no cycle, budgets and grids do not collide, every dot path is a setting, reference arms have no grid
of their own, and an Optuna search is one the report can pair and select on (validation, never test)."""

from __future__ import annotations

from ablations.contract import BUDGET_AXIS, FINETUNE_TOP1, VAL_FINETUNE_TOP1, validation_twin
from ablations.study.messages import Problems, suggest
from ablations.study.schema import StudySpec
from mto import flatten, setting_defaults

PATHS = list(setting_defaults())


def check_rules(spec: StudySpec, problems: Problems) -> None:
    """Add a problem for every rule between fields that ``spec`` breaks."""
    arms = list(spec.variants)
    if spec.reference not in spec.variants:
        problems.add(
            "target.reference",
            f"unknown arm {spec.reference!r}; arms are {', '.join(arms)}" + suggest(spec.reference, arms),
        )
    for arm, ref in spec.target.reference_of.items():
        for where, name in ((f"target.reference_of.{arm}", arm), (f"target.reference_of.{arm}", ref)):
            if name not in spec.variants:
                problems.add(where, f"unknown arm {name!r}; arms are {', '.join(arms)}" + suggest(name, arms))
    cycle = reference_cycle(spec)
    if cycle:
        problems.add(
            f"target.reference_of.{cycle[0]}",
            f"{' -> '.join(cycle)} is a cycle: every chain of references must "
            f"end at an arm compared with nothing (target.reference {spec.reference!r})",
        )
    if spec.budgets and (
        BUDGET_AXIS in spec.grid
        or any(BUDGET_AXIS in flatten(v) or f"grid.{BUDGET_AXIS}" in flatten(v) for v in spec.variants.values())
    ):
        problems.add("budgets", f"budgets set {BUDGET_AXIS} for every arm: remove {BUDGET_AXIS} from grid and variants")
    for path, values in spec.grid.items():
        check_dot_path(f"grid.{path}", path, problems)
        if not values:
            problems.add(f"grid.{path}", "an empty list: give at least one value")
    for arm, overrides in spec.variants.items():
        flat = flatten(overrides)
        for path, value in flat.items():
            if path.startswith("grid."):
                check_dot_path(f"variants.{arm}.{path}", path[5:], problems)
                if not isinstance(value, list) or not value:
                    problems.add(f"variants.{arm}.{path}", f"{value!r}: an arm's grid needs a non-empty list of values")
            else:
                check_dot_path(f"variants.{arm}.{path}", path, problems)
    for arm in {spec.reference, *spec.target.reference_of.values()} & set(spec.variants):
        if "grid" in spec.variants[arm] or any(k.startswith("grid.") for k in spec.variants[arm]):
            problems.add(
                f"variants.{arm}.grid",
                "a reference arm cannot have its own grid (which point would the "
                "others be compared with?); use the study-level grid",
            )
    if spec.search.kind == "optuna":
        if spec.grid:
            problems.add(
                "grid",
                "an Optuna study takes no study-level grid (its samples could not be paired with a "
                "reference point); put grids on arms",
            )
        if not spec.search.space:
            problems.add("search.space", "optuna search needs at least one dimension (dot path -> distribution)")
        for path in spec.search.space:
            check_dot_path(f"search.space.{path}", path, problems)
        if spec.search.arm is not None and spec.search.arm not in spec.variants:
            problems.add(
                "search.arm",
                f"unknown arm {spec.search.arm!r}; arms are {', '.join(arms)}" + suggest(spec.search.arm, arms),
            )
        twin = validation_twin(spec.search.metric)
        if twin:
            problems.add(
                "search.metric",
                f"{spec.search.metric!r} is measured on the test split, which only the tables "
                f"read; select on its validation twin {twin!r}",
            )
        if spec.search.asha and spec.search.metric in (FINETUNE_TOP1, VAL_FINETUNE_TOP1):
            problems.add(
                "search.asha",
                f"ASHA cuts at each epoch's report, and {spec.search.metric} arrives in a second "
                "report after it: select on a probe with ASHA, or remove search.asha",
            )
        if spec.budgets:
            problems.add("budgets", "an Optuna study takes no budgets (its samples could not be paired across budgets)")
        missing = sorted(set(spec.search_seeds) - set(spec.seeds))
        if missing:
            problems.add(
                "search.seeds",
                f"{missing} are not among the study's seeds {spec.seeds}: the samples' "
                "references run on the study's seeds",
            )
    elif spec.search.space or spec.search.asha:
        problems.add(
            "search.kind", "space and asha are for kind: optuna; a grid study crosses variants, grid and seeds"
        )


def reference_cycle(spec: StudySpec) -> list[str]:
    """The first cycle of ``target.reference_of`` (arm -> its reference -> ... -> that arm), or []."""
    for start in spec.target.reference_of:
        chain = [start]
        while chain[-1] in spec.target.reference_of and spec.target.reference_of[chain[-1]] != chain[-1]:
            chain.append(spec.target.reference_of[chain[-1]])
            if chain[-1] in chain[:-1]:
                return chain[chain.index(chain[-1]) :]
    return []


def check_dot_path(where: str, path: str, problems: Problems) -> None:
    if path == "train.seed":
        problems.add(where, "seeds come from the study's seeds list, not from train.seed")
    elif path not in PATHS:
        problems.add(where, f"unknown setting {path!r}" + suggest(path, PATHS))
