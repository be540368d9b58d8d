"""Configs as nested plain dicts and back: for YAML, JSON and MLflow params, and for notebooks
and machines without the suite's pydantic."""

from __future__ import annotations

import dataclasses
from typing import Any

from mto.config import DataConfig, EvalConfig, FinetuneConfig, MIMConfig, ModelConfig, MTOConfig, TrainConfig
from mto.errors import ConfigError


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as nested plain dicts (for YAML, JSON and MLflow params)."""
    return dataclasses.asdict(cfg)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> one dict by dot path (``{"mto": {"lambda_e": 0.1}}`` -> ``{"mto.lambda_e": 0.1}``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def from_dict(cls: type, data: dict[str, Any], _path: str = "") -> Any:
    """Build a config dataclass from nested dicts, refusing unknown keys.

    The suite validates with pydantic instead; this is the dependency-free path for notebooks
    and the GPU machine. Values are not coerced: pass the right types.
    """
    if not isinstance(data, dict):
        raise ConfigError(_path or cls.__name__, data, "a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{_path}{unknown[0]}", data[unknown[0]], f"unknown key; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        ftype = fields[name].type
        sub = _SECTIONS.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))
        kwargs[name] = from_dict(sub, value, f"{_path}{name}.") if sub and isinstance(value, dict) else value
    return cls(**kwargs)


_SECTIONS = {c.__name__: c for c in (DataConfig, ModelConfig, MIMConfig, MTOConfig, TrainConfig, EvalConfig,
                                     FinetuneConfig)}
