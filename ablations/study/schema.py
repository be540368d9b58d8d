"""The study file's schema (pydantic): which keys exist, their types and their single-field rules.

Rules that relate several fields (arms named in target, grids on reference arms, Optuna
settings) are checked in ``ablations.study.expansion``; trial settings are the very dataclasses
of ``mto.config``, validated by pydantic through their own ``__post_init__`` checks.
"""

from __future__ import annotations

import builtins
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ablations.contract import DEFAULT_SEARCH_METRIC, DEFAULT_TARGET_METRIC, DEFAULT_TRACKING_URI
from mto import MAX_EPOCHS, MAX_SEED, TrialConfig

# The bounds of the study's own counts (a trial's are mto.config.limits'): far above any study, below one that
# would run for practically ever.
MAX_TRIALS = 10_000  # trials of one study (arms x grid x seeds); an Optuna search adds num_samples x seeds
MAX_SEEDS = 1_000
MAX_SAMPLES = 100_000  # Optuna samples
MAX_RETRIES = 100  # restarts of one crashed trial
MAX_BUDGETS = 100
MAX_GPUS = 1_024  # GPUs of one trial
MAX_CPUS = 65_536  # CPUs of one trial (and then at most a node's, checked once Ray runs)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distribution(_Strict):
    """One search dimension: exactly one of the keys."""

    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    int: tuple[builtins.int, builtins.int] | None = None  # the field's name hides the type in the class body
    choice: list[Any] | None = None

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


def not_empty(v: list | None, what: str, default: str) -> list | None:
    """A list that may be null (its default) but not empty: an empty list would mean the default silently."""
    if v is not None and not v:
        raise ValueError(f"an empty list: give {what}, or null (the default: {default})")
    return v


class ASHASpec(_Strict):
    """Asynchronous successive halving (Ray Tune's ASHAScheduler) over epochs."""

    grace_period: int = Field(2, ge=1, le=MAX_EPOCHS)
    reduction_factor: float = Field(2.0, gt=1)


class SearchSpec(_Strict):
    kind: Literal["grid", "optuna"] = "grid"
    space: dict[str, Distribution] = {}  # optuna: dot path -> distribution
    num_samples: int = Field(10, ge=1, le=MAX_SAMPLES)
    metric: str = DEFAULT_SEARCH_METRIC  # selection reads the validation split, never the test split
    mode: Literal["max", "min"] = "max"
    seeds: list[int] | None = Field(None, max_length=MAX_SEEDS)  # each sample runs on these; null: the study's
    arm: str | None = None  # optuna: the arm whose config is searched (default: first non-reference arm)
    asha: ASHASpec | None = None

    _seeds = field_validator("seeds")(lambda v: not_empty(v, "the seeds", "the study's seeds"))


class ResourcesSpec(_Strict):
    cpu: float = Field(1.0, gt=0, le=MAX_CPUS)
    gpu: float = Field(0.0, ge=0, le=MAX_GPUS)  # fractional values pack several trials on one GPU
    fuse: int = Field(1, ge=1, le=64)  # up to this many fusable trials train as one stacked model (mto.training.unit)

    @field_validator("gpu")
    @classmethod
    def _fraction_or_whole(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("a fraction of one GPU (0 < gpu <= 1) or a whole number of GPUs")
        return v


class TrackingSpec(_Strict):
    uri: str = DEFAULT_TRACKING_URI  # relative sqlite paths are resolved against the working directory
    experiment: str | None = None  # default: the study's name
    # last: each trial logs its encoder at its last epoch (what the study's answer was measured on; one per trial,
    # ViT-Tiny 22 MB); none: no weights are kept
    encoder: Literal["last", "none"] = "last"


class TargetSpec(_Strict):
    metric: str = DEFAULT_TARGET_METRIC
    reference: str | None = None  # default: the first arm
    reference_of: dict[str, str] = {}  # arm -> its own reference arm (e.g. mae+mto: mae)
    fraction: float = Field(1.0, gt=0)


class StudySpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    base: TrialConfig = Field(default_factory=TrialConfig)
    variants: dict[str, dict[str, Any]] = Field(min_length=1)
    grid: dict[str, list[Any]] = {}
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, max_length=MAX_SEEDS)
    # Pre-training budgets in epochs: every arm runs once per budget, each its own warm-up and cosine
    # schedule (a grid over train.epochs); the report adds budget-to-target, the paper's epoch reduction.
    budgets: list[int] = Field([], max_length=MAX_BUDGETS)
    search: SearchSpec = Field(default_factory=SearchSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_concurrent: int | None = Field(None, ge=1, le=MAX_TRIALS)
    retries: int = Field(0, ge=0, le=MAX_RETRIES)  # Ray restarts a crashed trial this many times (from its checkpoint)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    target: TargetSpec = Field(default_factory=TargetSpec)
    # Ray Tune's storage: a folder (shared by every node of a multi-node cluster), or a URI of a file system
    # Ray Tune reaches through pyarrow (s3://bucket/path, gs://...), then the driver's own files stay in ./ray_results.
    storage: str = "ray_results"
    report_epochs: list[int] | None = None  # epochs of the heterogeneity-vs-depth figure; null: first, middle, last

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {str(v)[:80]}")
        bad = [s for s in v if not 0 <= s <= MAX_SEED]
        if bad:
            raise ValueError(f"{str(bad[0])[:40]} is not a seed: seeds are integers in [0, 2^63 - 1]")
        return v

    _report_epochs = field_validator("report_epochs")(lambda v: not_empty(v, "the epochs", "first, middle and last"))

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or any(not 1 <= b <= MAX_EPOCHS for b in v):
            raise ValueError(f"budgets must be distinct epoch counts from 1 to {MAX_EPOCHS:,}, got {str(v)[:80]}")
        if len(v) == 1:
            raise ValueError("give at least two budgets (one budget is train.epochs)")
        return sorted(v)

    @property
    def search_seeds(self) -> list[int]:
        """The seeds every Optuna sample runs on."""
        return self.seeds if self.search.seeds is None else self.search.seeds

    @property
    def storage_uri(self) -> bool:
        """Whether ``storage`` is a URI (``scheme://...``) rather than a folder."""
        return "://" in self.storage

    @property
    def driver_storage(self) -> str:
        """The folder of the driver's own files (state, journal, artifacts, compile cache): ``storage``, or
        ``ray_results`` when ``storage`` is a URI."""
        return "ray_results" if self.storage_uri else self.storage

    @property
    def search_arm(self) -> str:
        """The arm an Optuna search varies: ``search.arm``, else the first arm that is not the reference."""
        others = [a for a in self.variants if a != self.reference]
        return self.search.arm or (others[0] if others else self.reference)

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
