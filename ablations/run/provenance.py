"""Where a run came from: the code version and the versions of the packages that produced it, and the
trial's resolved config as MLflow params. Tags and params of every run the driver creates."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from ablations.study import flatten
from mto import TrialConfig, to_dict

PACKAGES = ("torch", "timm", "numpy", "scikit-learn", "ray", "mlflow", "optuna", "pydantic")


def code_version() -> str:
    """``git describe`` of the project (``-dirty`` when it has uncommitted changes), else the package version."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return metadata.version("mto-ablations")


def environment_tags() -> dict[str, str]:
    tags = {"code.version": code_version(), "versions.python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            tags[f"versions.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return tags


def flatten_config(cfg: TrialConfig) -> dict[str, str]:
    """The resolved config as MLflow params by dot path (``mto.lambda_e`` -> ``"0.1"``)."""
    return {k: str(v) for k, v in flatten(to_dict(cfg)).items()}
