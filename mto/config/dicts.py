"""Configs as nested plain dicts and flat dot paths: for YAML, JSON and MLflow params. (A study file becomes a
``TrialConfig`` through pydantic, in ``ablations.study``; in Python, build the dataclasses directly.)"""

from __future__ import annotations

import dataclasses
from typing import Any


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as nested plain dicts (for YAML, JSON and MLflow params)."""
    return dataclasses.asdict(cfg)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> one dict by dot path (``{"mto": {"lambda_e": 0.1}}`` -> ``{"mto.lambda_e": 0.1}``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out
