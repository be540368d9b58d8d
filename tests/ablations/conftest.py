import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.ablations.helpers import pythonpath

ROOT = Path(__file__).resolve().parents[2]

# A study small enough for 2 CPU cores: a 2-block ViT on 256 digits, a few epochs.
TINY_BASE = {
    "data": {"max_train": 256},
    "model": {"embed_dim": 32, "depth": 2, "num_heads": 2},
    "train": {"epochs": 3, "batch_size": 64, "warmup_epochs": 1},
    "eval": {"every": 1, "probe_steps": 20, "hetero_batch": 16, "affinity_epochs": [3]},
}


def write_study(folder: Path, **fields) -> Path:
    study = {
        "name": "tiny",
        "base": TINY_BASE,
        "variants": {"simmim": {}, "mto": {"mto.lambda_e": 0.1}},
        "seeds": [0],
        "storage": str(folder / "ray"),
        "tracking": {"uri": f"sqlite:///{folder}/mlflow.db"},
        "max_concurrent": 2,
        **fields,
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def run_cli(*args: str, cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m ablations.run ...`` as a user runs it (a real Ray cluster, a real MLflow store)."""
    env = {**os.environ, "PYTHONPATH": pythonpath(), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ablations.run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def mlflow_schema(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store whose tables MLflow made once (it takes about two seconds at every new store)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("schema") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def made_store(request):
    """An end-to-end test (``slow``) starts with the empty store ``tmp_path/mlflow.db`` already made, a copy of
    ``mlflow_schema``, unless marked ``no_store`` (it checks that nothing is created)."""
    node = request.node
    if node.get_closest_marker("slow") and not node.get_closest_marker("no_store"):
        shutil.copy(request.getfixturevalue("mlflow_schema"), request.getfixturevalue("tmp_path") / "mlflow.db")


@pytest.fixture
def study_dir(tmp_path):
    return tmp_path
