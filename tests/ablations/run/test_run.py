"""End to end on a real local Ray cluster and a real MLflow store: ``python -m ablations.run``."""

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.ablations.conftest import run_cli, write_study
from tests.ablations.helpers import start_driver, steps, study_runs, wait_for

pytestmark = pytest.mark.slow


def _mismatched_imagefolder(folder):
    from PIL import Image

    for split, cls in (("train", "a"), ("val", "b")):
        (folder / "imgs" / split / cls).mkdir(parents=True)
        Image.new("RGB", (16, 16)).save(folder / "imgs" / split / cls / "x.png")
    return folder / "imgs"


def test_study_logs_one_parent_and_a_nested_run_per_trial_and_survives_failing_trials(tmp_path):
    path = write_study(
        tmp_path,
        variants={
            "simmim": {},
            "mto": {"mto.lambda_e": 0.1, "mto.lambda_r": 0.1},
            "diverges": {"train.base_lr": 1.0e30},  # NaN loss in epoch 1
            # train/ and val/ with different classes: found only when the trial loads the images
            "crashes": {"data.name": "imagefolder", "data.path": str(_mismatched_imagefolder(tmp_path))},
        },
    )
    proc = run_cli(str(path), "--no-report", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parents, children = study_runs(uri)
    assert len(parents) == 1 and sorted(children) == ["crashes-s0", "diverges-s0", "mto-s0", "simmim-s0"]
    parent = parents[0]
    assert parent.info.status == "FAILED"
    assert "work: 4 trials, 9 pre-training epochs" in proc.stderr  # the run's first lines: its cost
    assert "; 1 on an image folder not counted" in proc.stderr  # its size is known only by reading it
    assert parent.data.tags["ablation.eta"].startswith("ended ")  # while it ran: its time left
    assert {a.path for a in MlflowClient(uri).list_artifacts(parent.info.run_id)} >= {
        "study.yaml",
        "resolved_trials.json",
    }
    for name in ("simmim-s0", "mto-s0"):
        run = children[name]
        tags = run.data.tags
        assert run.info.status == "FINISHED" and run.info.run_name == name
        assert tags["mlflow.parentRunId"] == parent.info.run_id and tags["ablation.arm"] == name[:-3]
        assert tags["ablation.seed"] == "0" and "code.version" in tags and "versions.torch" in tags
        assert tags["ablation.step"] == "eager" and "ablation.step_fallback" not in tags  # compile auto: off on a CPU
        assert run.data.params["train.epochs"] == "3" and "mto.lambda_e" in run.data.params
        for metric in ("train/loss", "train/loss_mim", "perf/img_per_s"):
            assert steps(uri, run, metric) == [1, 2, 3], metric
        for metric in (
            "eval/linear_top1",
            "eval/knn_top1",
            "val/linear_top1",
            "val/knn_top1",
            "hetero/l00",
            "hetero/l02",
            "trial/epoch",
        ):  # evaluated before training too (epoch 0)
            assert steps(uri, run, metric) == [0, 1, 2, 3], metric
        assert [a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id, "affinity")] == [
            "affinity/affinity_e0003.npz"
        ]
    assert children["mto-s0"].data.params["mto.lambda_e"] == "0.1"
    assert children["simmim-s0"].data.params["mto.lambda_e"] == "0.0"
    for name, reason in [
        ("diverges-s0", "NonFiniteLossError: non-finite training loss at epoch 1"),
        ("crashes-s0", "ConfigError: data.path="),
    ]:
        assert children[name].info.status == "FAILED"
        assert children[name].data.tags["ablation.failure"].startswith(reason)
        assert f"FAILED {name}: {reason}" in proc.stderr


# Ctrl-C of a study of single trials is the fine-tuning interrupt test's (test_finetune_e2e), SIGTERM's graceful
# stop the machine-fault test's (test_machine_faults).
@pytest.mark.parametrize("sig,fuse", [(signal.SIGKILL, 1), (signal.SIGINT, 3)], ids=["driver-killed", "ctrl-c-fused"])
def test_interrupted_study_resumes_without_redoing_or_duplicating_trials(tmp_path, sig, fuse):
    long_epochs = 12
    fused = fuse > 1
    seeds = [0, 1] if fused else [0]
    # long enough to be interrupted part-way (a fused unit of 3 on 512 images takes about one trial on all 1,437)
    long = {
        "data.max_train": 512 if fused else None,
        "train.epochs": long_epochs,
        "eval.every": 4,
        "eval.affinity_epochs": [],
    }
    # fused: units short-s0+1, long-s0+2 (long-s0, long-s1 and diverges-s0, which fails in epoch 1, before
    # the interrupt) and diverges-s1 alone
    diverges = {"diverges": {**long, "train.base_lr": 1.0e30}} if fused else {}
    path = write_study(
        tmp_path,
        max_concurrent=1,
        seeds=seeds,
        resources={"cpu": 1, "fuse": fuse},
        variants={"short": {"train.epochs": 2, "eval.affinity_epochs": []}, "long": long, **diverges},
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    driver = start_driver(path, tmp_path)

    def part_way(children) -> bool:  # "short" has finished and "long" is part-way
        return (
            children.get("short-s0") is not None
            and children["short-s0"].info.status == "FINISHED"
            and "long-s0" in children
            and 3 <= len(steps(uri, children["long-s0"], "train/loss")) < long_epochs - 2
        )

    children = wait_for(driver, uri, part_way)
    short_end = children["short-s0"].info.end_time
    os.killpg(driver.pid, sig)  # Ctrl-C reaches the whole foreground group; a kill takes the local cluster too
    output = driver.communicate(timeout=120)[0]
    if sig == signal.SIGINT:
        assert driver.returncode == 130, output
        assert f"resume with: {sys.executable} -m ablations.run" in output
        parents, children = study_runs(uri)
        assert parents[0].info.status == "KILLED" and children["long-s0"].info.status == "KILLED"

    resumed = run_cli(str(path), "--resume", "--no-report", cwd=tmp_path)
    assert resumed.returncode == (1 if fused else 0), resumed.stderr
    parents, children = study_runs(uri)
    assert len(parents) == 1 and parents[0].info.status == ("FAILED" if fused else "FINISHED")
    assert sorted(children) == sorted(f"{arm}-s{s}" for arm in ("long", "short", *diverges) for s in seeds)
    for name, run in children.items():
        encoder = [a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id, "encoder")]
        if name.startswith("diverges"):  # failed before the interrupt: still FAILED, with its reason, after it
            assert run.info.status == "FAILED", name
            assert run.data.tags["ablation.failure"].startswith("NonFiniteLossError"), name
            assert steps(uri, run, "train/loss") == [], name
            assert encoder == [] and "ablation.encoder" not in run.data.tags, name
        else:
            assert run.info.status == "FINISHED", name
            # its own encoder (each fused member's), of its last epoch, whether or not it was resumed
            assert encoder == ["encoder/config.json", "encoder/model.safetensors"], name
            assert run.data.tags["ablation.encoder"] == "encoder", name
            about = json.loads(Path(MlflowClient(uri).download_artifacts(run.info.run_id, encoder[0])).read_text())
            assert (about["mto"]["trial"], about["mto"]["epoch"]) == (name, {"s": 2}.get(name[0], long_epochs)), name
        if fused and not name.endswith("diverges-s1"):
            assert run.data.tags["ablation.fused_unit"] == {"s": "short-s0+1"}.get(name[0], "long-s0+2"), name
    assert children["short-s0"].info.end_time == short_end  # not run again
    for s in seeds:
        long = children[f"long-s{s}"]
        assert steps(uri, long, "train/loss") == list(range(1, long_epochs + 1))  # each epoch once
        assert steps(uri, long, "eval/linear_top1") == [0, 4, 8, 12]
        assert int(long.data.tags["ablation.resumed_from_epoch"]) >= 2  # from its checkpoint


def test_optuna_search_runs_after_the_arms_and_logs_each_sample(tmp_path):
    path = write_study(
        tmp_path,
        search={
            "kind": "optuna",
            "arm": "mto",
            "num_samples": 3,
            "metric": "val/linear_top1",
            "mode": "max",
            "space": {"mto.lambda_e": {"loguniform": [0.01, 1.0]}, "mto.layers_e": {"choice": ["early:1", "early:2"]}},
            "asha": {"grace_period": 1, "reduction_factor": 2},
        },
    )
    proc = run_cli(str(path), "--no-report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _, children = study_runs(uri)
    samples = [r for n, r in children.items() if "-o" in n]
    assert {"simmim-s0", "mto-s0"} <= set(children) and len(samples) == 3
    for run in samples:
        lam = float(run.data.tags["ablation.grid.mto.lambda_e"])
        assert 0.01 <= lam <= 1.0 and float(run.data.params["mto.lambda_e"]) == pytest.approx(lam)
        assert run.data.params["mto.layers_e"] in ("early:1", "early:2") and run.data.tags["ablation.arm"] == "mto"
        assert run.info.status == "FINISHED" and steps(uri, run, "train/loss")[0] == 1
        # an encoder from a sample that reached its last epoch; one ASHA stopped early never got there
        last = steps(uri, run, "train/loss")[-1] == 3
        assert ("ablation.encoder" in run.data.tags) == last, (run.info.run_name, steps(uri, run, "train/loss"))
