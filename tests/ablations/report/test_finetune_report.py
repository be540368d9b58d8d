"""Fine-tuned accuracy in the driver's MLflow writes and in the report: known numbers give known tables."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from scipy.stats import kendalltau

from ablations.report import build_report
from ablations.report.agreement import rank_agreement
from ablations.report.formulas import as_curve
from ablations.run.tracking import StudyTracker
from ablations.study import TrialSpec
from mto.config import TrialConfig
from tests.ablations.helpers import budget_study


def _by_counting(x, y):
    """Kendall's tau of tie-free data, from its definition: (concordant - discordant pairs) / all pairs."""
    signs = [np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in itertools.combinations(range(len(x)), 2)]
    return sum(signs) / len(signs)


def test_rank_agreement_is_kendalls_tau_over_the_points_both_measured():
    # three trials; the probe was measured at epochs 0, 2, 4, fine-tuning at 2 and 4 only
    probe = {
        "a": as_curve([0, 2, 4], [0.1, 0.3, 0.5]),
        "b": as_curve([0, 2, 4], [0.1, 0.4, 0.2]),
        "c": as_curve([0, 2, 4], [0.1, 0.6, 0.7]),
    }
    tuned = {
        "a": as_curve([2, 4], [0.50, 0.70]),
        "b": as_curve([2, 4], [0.65, 0.55]),
        "c": as_curve([2, 4], [0.60, 0.90]),
    }
    got = rank_agreement("eval/knn_top1", probe, tuned)
    x, y = [0.3, 0.5, 0.4, 0.2, 0.6, 0.7], [0.50, 0.70, 0.65, 0.55, 0.60, 0.90]
    assert got.tau == pytest.approx(kendalltau(x, y).statistic) == pytest.approx(_by_counting(x, y))
    assert got.tau == pytest.approx(9 / 15)  # 12 concordant, 3 discordant of 15 pairs
    assert (got.points, got.trials) == (6, 3)
    assert got.low <= got.tau <= got.high and -1 <= got.low and got.high <= 1
    two = rank_agreement("eval/knn_top1", probe, {k: tuned[k] for k in "ab"})
    assert math.isnan(two.low) and math.isnan(two.high) and not math.isnan(two.tau)  # no interval below 3 trials


def test_a_finetuning_result_is_logged_once_at_its_epoch_beside_that_epochs_metrics(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = StudyTracker(uri, "ft")
    tracker.start_study("ft", "", {}, {})
    name = tracker.open_trial(TrialSpec("a-s0", "a", 0, {}, TrialConfig(), "a-s0"))
    assert tracker.log_epoch(name, 2, {"eval/knn_top1": 0.5})
    assert tracker.log_epoch(name, 2, {"finetune/top1": 0.7}, "finetune")
    tracker.log_finetune_curve(name, 2, [2.3, 1.9])
    assert not tracker.log_epoch(name, 2, {"finetune/top1": 0.1}, "finetune")  # a repeated report
    assert tracker.flush()  # the writer thread has made them all, as a driver's end waits for it
    reopened = StudyTracker(uri, "ft")  # a resumed driver reads back what was logged
    reopened.start_study("ft", "", {}, {}, resume_id=tracker.parent_id)
    reopened.open_trial(TrialSpec("a-s0", "a", 0, {}, TrialConfig(), "a-s0"))
    assert not reopened.log_epoch(name, 2, {"finetune/top1": 0.1}, "finetune")
    assert reopened.log_epoch(name, 3, {"eval/knn_top1": 0.6})
    run = reopened.run_id(name)
    assert run == tracker.run_id(name)
    client = MlflowClient(uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run, "finetune/top1")] == [(2, 0.7)]
    assert [m.step for m in client.get_metric_history(run, "trial/epoch")] == [2, 3]
    saved = Path(client.download_artifacts(run, "finetune/loss_e0002.json")).read_text()
    assert json.loads(saved) == {"epoch": 2, "loss": [2.3, 1.9]}


def test_budget_table_on_finetuned_accuracy_with_the_probes_agreement(tmp_path):
    """Budgets 2 and 4 fine-tuned at their last epoch; target = base's fine-tuned final at 4 (0.60). mto's
    0.55 at 2 and 0.65 at 4 reach it at budget 3: 25% fewer epochs. kNN ranks as fine-tuning does (tau 1);
    the linear probe in reverse (tau -1)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    finals = {"base": {2: 0.50, 4: 0.60}, "mto": {2: 0.55, 4: 0.65}}
    for tracker, name, seed, budget, final in budget_study(uri, "finetune/top1", finals):
        tuned = final + 0.001 * seed
        for e in range(budget + 1):
            probes = {"eval/knn_top1": tuned - 0.2, "eval/linear_top1": 1.0 - tuned} if e == budget else {}
            tracker.log_epoch(name, e, {"train/loss": 1.0 / (e + 1), **probes})
        tracker.log_epoch(name, budget, {"finetune/top1": tuned, "val/finetune_top1": tuned - 0.01}, "finetune")
    report = build_report(uri, parent_run_id=tracker.parent_id, out=tmp_path / "rep")
    table = pd.read_csv(tmp_path / "rep" / "budgets.csv").set_index("arm")
    assert table.loc["mto"].budget_to_target_mean == pytest.approx(3.0, abs=0.07)
    assert table.loc["mto"].epoch_reduction_mean == pytest.approx(0.25, abs=0.02)
    assert table.loc["mto"].final_at_2_mean == pytest.approx(0.551)
    assert table.loc["mto"].knn_top1_at_2_mean == pytest.approx(0.351)  # the probes beside it, as side columns
    assert table.loc["base"].linear_top1_at_4_mean == pytest.approx(0.399)
    agreement = pd.read_csv(tmp_path / "rep" / "agreement.csv").set_index("probe")
    assert agreement.loc["eval/knn_top1"].tau == pytest.approx(1.0)
    assert agreement.loc["eval/linear_top1"].tau == pytest.approx(-1.0)
    assert agreement.loc["eval/knn_top1"].points == 12 and agreement.loc["eval/knn_top1"].trials == 12
    md = (tmp_path / "rep" / "ablation.md").read_text()
    assert "Which probe stands in for fine-tuning" in md and "Metric `finetune/top1`" in md
    assert "knn top1 @ 4 ep (%)" in md
    assert "Selected on validation (val/finetune_top1" in md
    # its trial: the full budget's best row (mto), then its best seed on validation (seed 2); no encoder logged here
    assert report.selected.name == "mto-s2-epochs=4" and report.selected.run_id in md
    assert "trial mto-s2-epochs=4" in md and "it kept no encoder" in md
    assert "agreement" in [p.stem for p in report.files]
