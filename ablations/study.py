"""Study files: schema, validation at the edge, and expansion into trials.

A study file is data (YAML read with a safe loader; tags that would construct objects are
refused). It is validated once, completely, before Ray starts or any MLflow run exists; every
problem becomes one ``StudyError`` line naming the field path (and line), the bad value and
what is allowed. The expanded trials carry fully validated ``mto.config.TrialConfig`` objects.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from mto.config import ConfigError, TrialConfig, to_dict
from mto.data import check_data


class StudyError(Exception):
    """A study file is invalid. ``problems`` holds one message per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source, self.problems = source, problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


# ---- schema ---------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distribution(_Strict):
    """One search dimension: exactly one of the keys."""

    loguniform: Optional[tuple[float, float]] = None
    uniform: Optional[tuple[float, float]] = None
    int: Optional[tuple[int, int]] = None
    choice: Optional[list[Any]] = None

    @model_validator(mode="after")
    def _one(self) -> Distribution:
        set_ = [k for k in ("loguniform", "uniform", "int", "choice") if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(f"give exactly one of loguniform, uniform, int, choice (got {set_ or 'none'})")
        lo_hi = self.loguniform or self.uniform or self.int
        if lo_hi is not None and not lo_hi[0] < lo_hi[1]:
            raise ValueError(f"the range {list(lo_hi)} must have low < high")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform needs a positive low end")
        if self.choice is not None and not self.choice:
            raise ValueError("choice needs at least one value")
        return self


class ASHASpec(_Strict):
    """Asynchronous successive halving (Ray Tune's ASHAScheduler) over epochs."""

    grace_period: int = Field(2, ge=1)
    reduction_factor: float = Field(2.0, gt=1)


class SearchSpec(_Strict):
    kind: Literal["grid", "optuna"] = "grid"
    space: dict[str, Distribution] = {}  # optuna: dot path -> distribution
    num_samples: int = Field(10, ge=1)
    metric: str = "eval/linear_top1"
    mode: Literal["max", "min"] = "max"
    arm: Optional[str] = None  # optuna: the arm whose config is searched (default: first non-reference arm)
    asha: Optional[ASHASpec] = None


class ResourcesSpec(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)  # fractional values pack several trials on one GPU

    @field_validator("gpu")
    @classmethod
    def _fraction_or_whole(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("a fraction of one GPU (0 < gpu <= 1) or a whole number of GPUs")
        return v


class TrackingSpec(_Strict):
    uri: str = "sqlite:///mlflow.db"  # relative sqlite paths are resolved against the working directory
    experiment: Optional[str] = None  # default: the study's name


class TargetSpec(_Strict):
    metric: str = "eval/linear_top1"
    reference: Optional[str] = None  # default: the first arm
    reference_of: dict[str, str] = {}  # arm -> its own reference arm (e.g. mae+mto: mae)
    fraction: float = Field(1.0, gt=0)


class StudySpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    base: TrialConfig = Field(default_factory=TrialConfig)
    variants: dict[str, dict[str, Any]] = Field(min_length=1)
    grid: dict[str, list[Any]] = {}
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    search: SearchSpec = Field(default_factory=SearchSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_concurrent: Optional[int] = Field(None, ge=1)
    retries: int = Field(0, ge=0)  # Ray restarts a crashed trial this many times (from its checkpoint)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    target: TargetSpec = Field(default_factory=TargetSpec)
    storage: str = "ray_results"  # Ray Tune's storage folder (a study's state lives under it)
    report_epochs: list[int] = []  # epochs for the heterogeneity-vs-depth figure (default: first, middle, last)

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v

    @field_validator("variants")
    @classmethod
    def _arm_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [a for a in v if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_+-]*", str(a))]
        if bad:
            raise ValueError(f"arm names may use letters, digits and _+- only: {bad}")
        return v

    @property
    def reference(self) -> str:
        return self.target.reference or next(iter(self.variants))

    def reference_for(self, arm: str) -> str:
        """The arm whose curves ``arm`` is compared with (RAUC, epochs-to-target)."""
        return self.target.reference_of.get(arm, self.reference)


# ---- expanded trials ------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialSpec:
    """One trial of a study: an arm, a seed and a point of the grid, with its resolved config."""

    name: str
    arm: str
    seed: int
    grid: dict[str, Any]
    config: TrialConfig = field(compare=False)
    reference: str = ""  # the trial it is compared with: its reference arm, same seed and study-grid point


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

    def sample_reference(self) -> str:
        """The trial an Optuna sample is compared with: the searched arm's reference, first seed."""
        ref = self.spec.reference_for(self.search_arm)
        return trial_name(ref, self.spec.seeds[0], {}, {})

    @property
    def search_arm(self) -> str:
        """The arm an Optuna search varies: ``search.arm``, else the first arm that is not the reference."""
        others = [a for a in self.spec.variants if a != self.spec.reference]
        return self.spec.search.arm or (others[0] if others else self.spec.reference)

    def search_config(self, arm: str, seed: int, sample: dict[str, Any]) -> TrialConfig:
        """An arm's config with an Optuna sample applied (validated; raises ConfigError)."""
        fixed, _ = arm_overrides(self.spec.variants[arm])
        return _validate_trial(apply_overrides(to_dict(self.spec.base), {**fixed, **sample, "train.seed": seed}))


# ---- loading --------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """Safe loader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _line_index(node: yaml.Node, path: tuple = (), out: Optional[dict] = None) -> dict[tuple, int]:
    """Field path -> 1-based line of its key, for error messages."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            # keys under variants and grid are dot paths: index them by their parts
            split = path[:1] in (("variants",), ("grid",))
            p = path + (tuple(str(k.value).split(".")) if split else (str(k.value),))
            out.setdefault(p, k.start_mark.line + 1)
            _line_index(v, p, out)
    return out


def parse_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[tuple, int]]:
    """Parse study YAML safely; returns the data and a field-path -> line index."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise StudyError(source, ["the file is empty: a study needs at least name and variants"])
        lines = _line_index(node)
        data = loader.construct_document(node)
    except yaml.constructor.ConstructorError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = str(err.problem)
        if "constructor for the tag" in problem:
            problem = (f"YAML tag {err.problem_mark and _tag_of(err)} is not allowed: study files are data, "
                       "nothing in them is constructed or executed")
        raise StudyError(source, [where + problem]) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        raise StudyError(source, [f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {err.problem}"]
                         ) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise StudyError(source, [f"the top level must be a mapping of study keys, got {type(data).__name__}"])
    return data, lines


def _tag_of(err: yaml.constructor.ConstructorError) -> str:
    m = re.search(r"tag '([^']+)'", str(err.problem))
    return repr(m.group(1)) if m else "(unknown)"


def load_study(path: Union[str, Path], sets: Optional[list[str]] = None, *, check_paths: bool = True) -> Study:
    """Read, override (``--set key=value``), validate and expand a study file.

    Raises:
        StudyError: with every problem found; nothing has been started.
    """
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise StudyError(source, [f"cannot read the study file: {err.strerror}"]) from None
    raw, lines = parse_yaml(text, source)
    for item in sets or []:
        apply_set(raw, item, source)
    return validate_study(raw, source, lines, check_paths=check_paths)


def apply_set(raw: dict[str, Any], item: str, source: str = "--set") -> None:
    """Apply one ``key=value`` override to the raw study (value parsed as YAML, safely)."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise StudyError(source, [f"--set {item!r}: expected key=value, e.g. --set base.train.epochs=2"])
    try:
        value = yaml.load(text, Loader=_Loader) if text else None
    except yaml.YAMLError as err:
        raise StudyError(source, [f"--set {item!r}: the value is not valid YAML ({err})"]) from None
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        rest = ".".join(parts[i:])
        if rest in node:  # a dot-path key inside variants or grid
            node[rest] = value
            return
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise StudyError(source, [f"--set {item!r}: {'.'.join(parts[:i + 1])} is not a mapping"])
    node[parts[-1]] = value


def validate_study(raw: dict[str, Any], source: str, lines: Optional[dict[tuple, int]] = None, *,
                   check_paths: bool = True) -> Study:
    lines = lines or {}
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as err:
        raise StudyError(source, [_describe(e, lines) for e in err.errors()]) from None
    problems: list[str] = []
    arms = list(spec.variants)

    def problem(path: str, msg: str) -> None:
        line = lines.get(tuple(path.split(".")))
        problems.append(f"{path}{f' (line {line})' if line else ''}: {msg}")

    if spec.reference not in spec.variants:
        problem("target.reference", f"unknown arm {spec.reference!r}; arms are {', '.join(arms)}"
                + _suggest(spec.reference, arms))
    for arm, ref in spec.target.reference_of.items():
        for where, name in ((f"target.reference_of.{arm}", arm), (f"target.reference_of.{arm}", ref)):
            if name not in spec.variants:
                problem(where, f"unknown arm {name!r}; arms are {', '.join(arms)}" + _suggest(name, arms))
    for path, values in spec.grid.items():
        _check_dot_path(f"grid.{path}", path, problem)
        if not values:
            problem(f"grid.{path}", "an empty list: give at least one value")
    for arm, overrides in spec.variants.items():
        flat = _flatten(overrides)
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
                    + _suggest(spec.search.arm, arms))
    elif spec.search.space or spec.search.asha:
        problem("search.kind", "space and asha are for kind: optuna; a grid study crosses variants, grid and seeds")
    if problems:
        raise StudyError(source, problems)

    trials = _expand(spec, source)
    if check_paths:
        checked = set()
        for t in trials:
            key = (t.config.data.name, t.config.data.path)
            if key not in checked:
                checked.add(key)
                try:
                    check_data(t.config.data)
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
    for arm, overrides in spec.variants.items():
        fixed_of[arm], arm_grid = arm_overrides(overrides)
        axes_of[arm] = {**spec.grid, **arm_grid}
    for arm in spec.variants:
        axes = axes_of[arm]
        keys = list(axes)
        ref = spec.reference_for(arm)
        for values in itertools.product(*(axes[k] for k in keys)):
            point = dict(zip(keys, values))
            for seed in spec.seeds:
                name = trial_name(arm, seed, point, axes)
                ref_name = trial_name(ref, seed, {k: point[k] for k in spec.grid}, axes_of[ref])
                try:
                    cfg = _validate_trial(apply_overrides(base, {**fixed_of[arm], **point, "train.seed": seed}))
                except ConfigError as err:
                    problems.append(f"variants.{arm} (trial {name}): {err}")
                    continue
                if name in names:
                    problems.append(f"variants.{arm}: trial {name} appears twice (duplicate grid values?)")
                names.add(name)
                trials.append(TrialSpec(name, arm, seed, point, cfg, ref_name))
    if problems:
        raise StudyError(source, problems)
    return trials


def arm_overrides(variant: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list]]:
    """An arm's fixed dot-path settings and its own grid (``grid.<path>: [values]``)."""
    flat = _flatten(variant)
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


# ---- helpers --------------------------------------------------------------------------------
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


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, path + "."))
        else:
            out[path] = v
    return out


def apply_overrides(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of nested ``config`` with dot-path ``overrides`` set."""
    import copy

    out = copy.deepcopy(config)
    for path, value in overrides.items():
        node = out
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def config_paths(cls: type = TrialConfig, prefix: str = "") -> list[str]:
    """Every settable dot path of a TrialConfig (``mto.lambda_e``, ``train.epochs`` ...)."""
    out = []
    for f in fields(cls):
        t = f.default_factory() if callable(f.default_factory) else None  # type: ignore[misc]
        if t is not None and is_dataclass(t):
            out += config_paths(type(t), f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


_PATHS = config_paths()


def _check_dot_path(where: str, path: str, problem) -> None:
    if path == "train.seed":
        problem(where, "seeds come from the study's seeds list, not from train.seed")
    elif path not in _PATHS:
        problem(where, f"unknown setting {path!r}" + _suggest(path, _PATHS))


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _describe(e: dict[str, Any], lines: dict[tuple, int]) -> str:
    """One line for one pydantic error: path (line): bad value -> what is allowed."""
    loc = tuple(str(p) for p in e["loc"])
    path = ".".join(loc) or "(top level)"
    line = _nearest_line(loc, lines)
    where = f"{path}{f' (line {line})' if line else ''}"
    msg = e["msg"].removeprefix("Value error, ")
    cause = e.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError) and loc[:1] == ("base",):  # mto's own check: it names the field
        full = ("base",) + tuple(cause.path.split("."))
        line = _nearest_line(full, lines)
        return f"{'.'.join(full)}{f' (line {line})' if line else ''}: {cause.value!r} is invalid: {cause.allowed}"
    if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        allowed = _allowed_keys(loc[:-1])
        return f"{where}: unknown key {loc[-1]!r}{_suggest(loc[-1], allowed)} (allowed: {', '.join(allowed)})"
    if e["type"] == "missing":
        return f"{where}: required, missing"
    return f"{where}: {e.get('input')!r} is invalid: {msg}"


def _nearest_line(loc: tuple, lines: dict[tuple, int]) -> Optional[int]:
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = StudySpec
    for part in loc:
        sub = None
        if isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            sub = model.model_fields[part].annotation
        elif is_dataclass(model):
            f = {f.name: f for f in fields(model)}.get(part)
            sub = f.default_factory() if f is not None and callable(f.default_factory) else None  # type: ignore[misc]
            sub = type(sub) if sub is not None and is_dataclass(sub) else None
        if sub is None:
            return []
        model = getattr(sub, "__args__", (sub,))[0] if getattr(sub, "__origin__", None) is Union else sub
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return [f.name for f in fields(model)] if is_dataclass(model) else []
