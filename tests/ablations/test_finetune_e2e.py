"""Fine-tuning through ``python -m ablations.run``: a budget study judged on fine-tuned accuracy, end to end on
real Ray Tune and MLflow."""

import copy

import pytest
from mlflow import MlflowClient

from tests.ablations.conftest import TINY_BASE, run_cli, write_study
from tests.ablations.helpers import steps, study_runs

pytestmark = pytest.mark.slow


def test_a_budget_study_logs_finetuned_accuracy_at_each_budgets_end_and_reports_on_it(tmp_path):
    base = copy.deepcopy(TINY_BASE)
    base["eval"].update(affinity_epochs=[], finetune={"enabled": True, "epochs": 1, "warmup_epochs": 0,
                                                      "batch_size": 64})
    variants = {"simmim": {}, "mto": {"mto.lambda_e": 0.1}, "diverges": {"eval.finetune.base_lr": 1.0e30}}
    path = write_study(tmp_path, base=base, budgets=[1, 2], variants=variants,
                       target={"metric": "finetune/top1", "reference": "simmim"})
    proc = run_cli(str(path), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # the diverging fine-tunings fail their trials; the others go on
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _, children = study_runs(uri)
    assert sorted(children) == ["diverges-s0-epochs=1", "diverges-s0-epochs=2", "mto-s0-epochs=1", "mto-s0-epochs=2",
                                "simmim-s0-epochs=1", "simmim-s0-epochs=2"]
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
        assert [f.path for f in client.list_artifacts(run.info.run_id, "finetune")] == \
               [f"finetune/loss_e{budget:04d}.json"]
    report = next((tmp_path / "reports").glob("tiny/*"))
    assert {"budgets.csv", "agreement.csv", "ablation.md"} <= {p.name for p in report.iterdir()}
    md = (report / "ablation.md").read_text()
    assert "Metric `finetune/top1`" in md and "Which probe stands in for fine-tuning" in md
    assert "Which probe stands in for fine-tuning" in proc.stdout
    assert "diverges-s0-epochs=2: failed: NonFiniteLossError" in md  # left out, with its reason
