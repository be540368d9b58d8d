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
    path = write_study(tmp_path, base=base, budgets=[1, 2], target={"metric": "finetune/top1", "reference": "simmim"})
    proc = run_cli(str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _, children = study_runs(uri)
    assert sorted(children) == ["mto-s0-epochs=1", "mto-s0-epochs=2", "simmim-s0-epochs=1", "simmim-s0-epochs=2"]
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
