"""``resources.fuse``: fused units through real Ray Tune and MLflow, each member its own run and curve."""

import dataclasses

import pytest
from mlflow import MlflowClient

from ablations.study import load_study
from mto.training.trial import run_trial
from tests.ablations.conftest import run_cli, write_study
from tests.ablations.helpers import steps, study_runs

pytestmark = pytest.mark.slow


def test_fused_units_log_one_run_per_member_and_a_diverging_member_fails_alone(tmp_path):
    path = write_study(
        tmp_path,
        seeds=[0, 1],
        resources={"cpu": 1, "fuse": 3},
        variants={
            "simmim": {},
            "mto": {"mto.lambda_e": 0.1},
            "strong": {"mto.lambda_e": 0.3},
            "diverges": {"mto.lambda_e": 0.1, "train.base_lr": 1.0e30},
        },
    )
    study = load_study(path)
    units = {name: [t.name for t in unit] for name, unit in study.units.items()}
    assert units == {
        "simmim-s0+1": ["simmim-s0", "simmim-s1"],
        "mto-s0+2": ["mto-s0", "mto-s1", "strong-s0"],
        "strong-s1+2": ["strong-s1", "diverges-s0", "diverges-s1"],
    }
    proc = run_cli(str(path), "--no-report", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # the diverging trials failed; everything else finished
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parents, children = study_runs(uri)
    assert sorted(children) == sorted(t.name for t in study.trials)
    for name, run in children.items():
        if name.startswith("diverges"):
            assert run.info.status == "FAILED", name
            assert run.data.tags["ablation.failure"].startswith(
                "NonFiniteLossError: non-finite training loss at epoch 1"
            )
            assert f"FAILED {name}: NonFiniteLossError" in proc.stderr
            continue
        assert run.info.status == "FINISHED", name
        assert run.data.tags["ablation.fused_unit"] == next(u for u, members in units.items() if name in members)
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert steps(uri, run, "train/loss") == [1, 2, 3] and steps(uri, run, "eval/linear_top1") == [0, 1, 2, 3]
        fused = {
            "simmim": [2.0] * 3,
            "mto": [3.0] * 3,
            "strong-s0": [3.0] * 3,
            "strong-s1": [3.0, 1.0, 1.0],
        }  # its two partners diverged in epoch 1 and left the unit
        history = MlflowClient(uri).get_metric_history(run.info.run_id, "perf/fused_trials")
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == next(
            v for k, v in fused.items() if name.startswith(k)
        ), name
        assert [a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id, "affinity")] == [
            "affinity/affinity_e0003.npz"
        ]  # each member's own maps, on its own run
    # a member that shared its unit with two diverging trials has the curve it has when run alone
    alone = run_trial(dataclasses.replace(study.trial("strong-s1").config)).history
    logged = MlflowClient(uri).get_metric_history(children["strong-s1"].info.run_id, "train/loss")
    assert [m.value for m in sorted(logged, key=lambda m: m.step)] == pytest.approx(
        [h["train/loss"] for h in alone if "train/loss" in h], rel=1e-4
    )
