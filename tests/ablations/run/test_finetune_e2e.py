"""Fine-tuning through ``python -m ablations.run``: a budget study judged on fine-tuned accuracy, end to end on
real Ray Tune and MLflow."""

import copy
import os
import signal
import time

import pytest
from mlflow import MlflowClient

from tests.ablations.conftest import TINY_BASE, run_cli, write_study
from tests.ablations.helpers import start_driver, steps, study_runs, wait_for

pytestmark = pytest.mark.slow


def test_a_budget_study_logs_finetuned_accuracy_at_each_budgets_end_and_reports_on_it(tmp_path):
    base = copy.deepcopy(TINY_BASE)
    base["eval"].update(
        affinity_epochs=[], finetune={"enabled": True, "epochs": 1, "warmup_epochs": 0, "batch_size": 64}
    )
    variants = {"simmim": {}, "mto": {"mto.lambda_e": 0.1}, "diverges": {"eval.finetune.base_lr": 1.0e30}}
    path = write_study(
        tmp_path,
        base=base,
        budgets=[1, 2],
        variants=variants,
        target={"metric": "finetune/top1", "reference": "simmim"},
    )
    proc = run_cli(str(path), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # the diverging fine-tunings fail their trials; the others go on
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _, children = study_runs(uri)
    assert sorted(children) == [
        "diverges-s0-epochs=1",
        "diverges-s0-epochs=2",
        "mto-s0-epochs=1",
        "mto-s0-epochs=2",
        "simmim-s0-epochs=1",
        "simmim-s0-epochs=2",
    ]
    for budget in (1, 2):
        failed = children.pop(f"diverges-s0-epochs={budget}")
        assert failed.info.status == "FAILED"
        assert failed.data.tags["ablation.failure"].startswith("NonFiniteLossError: non-finite fine-tuning loss")
        assert steps(uri, failed, "trial/epoch") == list(range(budget + 1))  # its pre-training was logged
    client = MlflowClient(uri)
    for name, run in children.items():
        budget = int(name[-1])
        assert run.info.status == "FINISHED", name
        for metric in ("finetune/top1", "val/finetune_top1", "finetune/train_loss", "trial/finetune_epoch"):
            assert steps(uri, run, metric) == [budget], (name, metric)  # once, at the budget's last epoch
        assert steps(uri, run, "trial/epoch") == list(range(budget + 1))
        assert 0 <= run.data.metrics["finetune/top1"] <= 1
        assert [f.path for f in client.list_artifacts(run.info.run_id, "finetune")] == [
            f"finetune/loss_e{budget:04d}.json"
        ]
    report = next((tmp_path / "reports").glob("tiny/*"))
    assert {"budgets.csv", "agreement.csv", "ablation.md"} <= {p.name for p in report.iterdir()}
    md = (report / "ablation.md").read_text()
    assert "Metric `finetune/top1`" in md and "Which probe stands in for fine-tuning" in md
    assert "Which probe stands in for fine-tuning" in proc.stdout
    assert "diverges-s0-epochs=2: failed: NonFiniteLossError" in md  # left out, with its reason


def test_a_study_interrupted_while_finetuning_resumes_with_it_and_logs_each_point_once(tmp_path):
    base = copy.deepcopy(TINY_BASE)
    base["eval"].update(
        affinity_epochs=[], finetune={"enabled": True, "at": [1], "epochs": 24, "warmup_epochs": 0, "batch_size": 64}
    )  # about 6 s on 2 cores: the interrupt comes within it
    path = write_study(tmp_path, base=base, variants={"simmim": {}})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    driver = start_driver(path, tmp_path)
    # wait until epoch 1 is logged: its checkpoint is written and the fine-tuning has begun
    wait_for(driver, uri, lambda runs: "simmim-s0" in runs and 1 in steps(uri, runs["simmim-s0"], "trial/epoch"))
    time.sleep(1)
    _, children = study_runs(uri)
    assert steps(uri, children["simmim-s0"], "finetune/top1") == []  # interrupted while fine-tuning
    os.killpg(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=120) == 130, driver.stdout.read()
    resumed = run_cli(str(path), "--resume", "--no-report", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    _, children = study_runs(uri)
    run = children["simmim-s0"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["ablation.resumed_from_epoch"] == "1"  # from the checkpoint written before fine-tuning
    assert steps(uri, run, "finetune/top1") == steps(uri, run, "trial/finetune_epoch") == [1]
    assert steps(uri, run, "trial/epoch") == [0, 1, 2, 3] and steps(uri, run, "train/loss") == [1, 2, 3]
