"""The report on a real MLflow store: known curves give known tables; bad selections exit 2."""

import math
import shutil

import pandas as pd
import pytest
from mlflow import MlflowClient

from ablations.contract import REFERENCE_ARM, REPORT_EPOCHS, STEP_FALLBACK_TAG, TARGET_FRACTION, TARGET_METRIC
from ablations.report import build_report
from ablations.report.cli import main
from ablations.report.encoder import main as encoder_main
from ablations.run.tracking import StudyTracker
from ablations.study import TrialSpec
from mto.config import DataConfig, TrialConfig
from tests.ablations.helpers import budget_study

# arm -> seed -> linear-probe curve at epochs 2, 4, 6, 8
CURVES = {
    "base": {0: [0.40, 0.50, 0.60, 0.70], 1: [0.42, 0.52, 0.62, 0.72]},
    "fast": {0: [0.50, 0.70, 0.72, 0.74], 1: [0.50, 0.72, 0.74, 0.76]},
    "slow": {0: [0.30, 0.40, 0.50, 0.60], 1: [0.32, 0.42, 0.52, 0.62]},
}
EPOCHS = [2, 4, 6, 8]


def known_study(uri: str, data: str = "digits", report_epochs: str = "") -> str:
    """The study of ``CURVES`` (and one failed trial) in the store at ``uri``; returns its parent run id."""
    tracker = StudyTracker(uri, "known")
    tracker.start_study(
        "known",
        "curves with known answers",
        {"resolved_trials.json": "{}"},
        {
            TARGET_METRIC: "eval/linear_top1",
            TARGET_FRACTION: "1.0",
            REFERENCE_ARM: "base",
            REPORT_EPOCHS: report_epochs,
        },
    )
    cfg = TrialConfig(data=DataConfig(name=data))
    cfg.train.epochs = 8
    for arm, seeds in CURVES.items():
        for seed, values in seeds.items():
            name = tracker.open_trial(TrialSpec(f"{arm}-s{seed}", arm, seed, {}, cfg, f"base-s{seed}"))
            for e, v in zip(EPOCHS, values):
                tracker.log_epoch(name, e, {"eval/linear_top1": v, "hetero/l00": 0.9, "hetero/l01": 0.8})
            tracker.end_trial(name, "FINISHED")
    broken = tracker.open_trial(TrialSpec("broken-s0", "broken", 0, {}, cfg, "base-s0"))
    tracker.log_epoch(broken, 2, {"eval/linear_top1": 0.1})
    tracker.end_trial(broken, "FAILED", "NonFiniteLossError: non-finite training loss at epoch 3")
    tracker.end_study("FAILED")
    return tracker.parent_id


@pytest.fixture
def store(tmp_path, mlflow_schema):
    shutil.copy(mlflow_schema, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    return uri, known_study(uri)


def test_a_study_on_synthetic_images_is_reported_as_meaningless(store, tmp_path):
    uri, parent = store
    warning = "data.name is synthetic (random images, for throughput)"
    assert not any(warning in n for n in build_report(uri, parent_run_id=parent, out=tmp_path / "real").notes)
    uri = f"sqlite:///{tmp_path}/synthetic.db"
    report = build_report(uri, parent_run_id=known_study(uri, data="synthetic"), out=tmp_path / "synthetic")
    assert report.notes[0].startswith(warning)
    assert warning in (tmp_path / "synthetic" / "ablation.md").read_text()
    assert warning in (tmp_path / "synthetic" / "report.html").read_text()


def test_the_legend_says_which_trials_steps_fell_back(store, tmp_path):
    uri, parent = store
    said = "**Steps that fell back**"
    build_report(uri, parent_run_id=parent, out=tmp_path / "a", log=False)
    assert said not in (tmp_path / "a" / "ablation.md").read_text()
    client = MlflowClient(uri)
    fast = next(
        r for r in client.search_runs([client.get_run(parent).info.experiment_id]) if r.info.run_name == "fast-s0"
    )
    client.set_tag(fast.info.run_id, STEP_FALLBACK_TAG, "compiled failed: RuntimeError: no working C++ compiler")
    build_report(uri, parent_run_id=parent, out=tmp_path / "b", log=False)
    legend = (tmp_path / "b" / "ablation.md").read_text()
    assert f"- {said}: 1 of 7 trials could not run their compiled step" in legend and "(`fast-s0`;" in legend
    assert "<strong>Steps that fell back</strong>" in (tmp_path / "b" / "report.html").read_text()


def test_the_heterogeneity_epochs_are_the_studys_unless_the_command_line_says(store, tmp_path):
    uri, parent = store
    assert build_report(uri, parent_run_id=parent, out=tmp_path / "a", log=False).heterogeneity_epochs == [2, 6, 8]
    uri = f"sqlite:///{tmp_path}/chosen.db"
    parent = known_study(uri, report_epochs="2,4")  # the study's report_epochs, as the run writes them
    assert build_report(uri, parent_run_id=parent, out=tmp_path / "b", log=False).heterogeneity_epochs == [2, 4]
    chosen = build_report(uri, parent_run_id=parent, out=tmp_path / "c", epochs=[8], log=False)
    assert chosen.heterogeneity_epochs == [8]


def test_known_curves_give_known_numbers(store, tmp_path):
    uri, parent = store
    report = build_report(uri, parent_run_id=parent, out=tmp_path / "rep")
    trials = pd.read_csv(tmp_path / "rep" / "trials.csv").set_index("trial")
    assert "broken-s0" not in trials.index and [t.name for t in report.left_out] == ["broken-s0"]
    fast0 = trials.loc["fast-s0"]
    assert fast0.final == pytest.approx(0.74) and fast0.target == pytest.approx(0.70)
    # fast-s0 crosses 0.70 exactly at epoch 4; base-s0 reaches its own final at epoch 8
    assert fast0.epochs_to_target == pytest.approx(4.0) and fast0.reference_epochs_to_target == pytest.approx(8.0)
    assert fast0.speedup == pytest.approx(2.0) and fast0.epoch_reduction == pytest.approx(0.5)
    assert fast0.rauc == pytest.approx(
        ((0.5 + 0.7) + (0.7 + 0.72) + (0.72 + 0.74)) / ((0.4 + 0.5) + (0.5 + 0.6) + (0.6 + 0.7))
    )
    assert fast0.auc == pytest.approx(((0.5 + 0.7) + (0.7 + 0.72) + (0.72 + 0.74)) / 6)  # trapezoids of width 2 over 6
    assert math.isnan(trials.loc["slow-s0"].epochs_to_target)  # 0.60 < 0.70: censored
    assert trials.loc["base-s1"].delta_final == pytest.approx(0.0) and trials.loc[
        "slow-s1"
    ].delta_final == pytest.approx(-0.1)
    table = pd.read_csv(tmp_path / "rep" / "ablation.csv").set_index("arm")
    assert table.loc["fast"].final_mean == pytest.approx(0.75) and table.loc["fast"].seeds == 2
    assert table.loc["fast"].speedup_mean == pytest.approx(trials.loc[["fast-s0", "fast-s1"]].speedup.mean())
    assert table.loc["slow"].epochs_to_target_reached == 0 and math.isnan(table.loc["slow"].epochs_to_target_mean)
    assert table.loc["base"].reference and not table.loc["fast"].reference


def test_tables_show_censoring_bold_bests_and_escape_latex(store, tmp_path):
    uri, parent = store
    build_report(uri, parent_run_id=parent, out=tmp_path / "rep")
    md = (tmp_path / "rep" / "ablation.md").read_text()
    assert "> 8 (0/2 reached)" in md and "| base (reference) | 2 |" in md
    assert "| **75.0** |" in md  # the best final, bold; two seeds: no interval, and the report says why
    assert "intervals over fewer than 3 seeds are not meaningful" in md
    assert "broken-s0: failed: NonFiniteLossError" in md
    # the legend's first line is the target metric's declaration
    assert "- **Metric** `eval/linear_top1`: top-1 of a linear classifier on frozen" in md
    assert "higher is better. A proxy, not the papers' metric." in md
    tex = (tmp_path / "rep" / "ablation.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\textbf{75.0}" in tex
    assert "linear\\_top1" in tex and "(\\%)" in tex and "$>$ 8" in tex
    page = (tmp_path / "rep" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and 'src="http' not in page  # self-contained


def test_summary_metrics_and_report_files_land_in_mlflow(store, tmp_path):
    uri, parent = store
    build_report(uri, parent_run_id=parent, out=tmp_path / "rep")
    client = MlflowClient(uri)
    runs = {
        r.data.tags["ablation.trial"]: r
        for r in client.search_runs([client.get_run(parent).info.experiment_id], "tags.`ablation.role` = 'trial'")
    }
    fast = runs["fast-s0"].data.metrics
    assert fast["summary/epochs_to_target"] == pytest.approx(4.0) and fast["summary/final"] == pytest.approx(0.74)
    assert "summary/epochs_to_target" not in runs["slow-s0"].data.metrics  # censored: absent, not a number
    files = {f.path for f in client.list_artifacts(parent, "report")}
    assert {
        "report/ablation.md",
        "report/ablation.csv",
        "report/ablation.tex",
        "report/report.html",
        "report/learning_curves.png",
        "report/epochs_to_target.png",
        "report/heterogeneity_depth.png",
    } <= files


def test_report_cli_finds_the_latest_study_by_experiment(store, tmp_path, capsys, monkeypatch):
    uri, _ = store
    monkeypatch.setenv("COLUMNS", "200")
    assert (
        main(["--experiment", "known", "--tracking-uri", uri, "--out", str(tmp_path / "cli"), "--format", "md,csv"])
        == 0
    )
    out = capsys.readouterr()
    assert "fast" in out.out and "RAUC" in out.out and "broken-s0: failed" in out.err
    assert sorted(p.name for p in (tmp_path / "cli").glob("*.md")) == ["ablation.md"]
    assert not (tmp_path / "cli" / "ablation.tex").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--experiment", "nope"], "no experiment 'nope'"),
        (["--run", "0123456789abcdef"], "no run '0123456789abcdef'"),
        (["--experiment", "known", "--metric", "eval/missing"], "has the metric 'eval/missing'"),
        (["--experiment", "known", "--format", "pdf"], "--format 'pdf'"),
        (["--experiment", "known", "--register", "enc"], "--register enc: no trial is selected (val/linear_top1 was"),
    ],
)
def test_report_refuses_missing_studies_and_metrics_with_exit_2(store, capsys, args, message):
    uri, _ = store
    assert main([*args, "--tracking-uri", uri, "--no-log"]) == 2
    assert message in " ".join(capsys.readouterr().err.split())


def test_fetching_or_finetuning_an_encoder_refuses_runs_without_one_and_runs_that_do_not_exist(store, tmp_path, capsys):
    uri, parent = store
    trial = StudyTracker(uri, "known")
    trial.start_study("known", "", {}, {}, resume_id=parent)
    base = trial.run_id("base-s0")
    for args, message in [
        (["fetch", base], f"error: run {base} (base-s0) has no encoder: only a trial that reached its last epoch"),
        (["fetch", parent], f"error: run {parent} (known-"),  # a study's parent run: no encoder either
        (["fetch", "0123456789abcdef"], "error: no run '0123456789abcdef' in sqlite:///"),
        (["finetune", "0123456789abcdef"], "error: no run '0123456789abcdef'"),
        (["finetune", str(tmp_path)], f"error: encoder='{tmp_path}' is invalid: a folder with model.safetensors"),
    ]:
        assert encoder_main(["--tracking-uri", uri, *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, (args, err)


def test_bulk_history_reading_equals_per_run_reading(store):
    from ablations.report.source import Source

    uri, parent = store
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_run(parent).info.experiment_id], "tags.`ablation.role` = 'trial'")
    got = Source(uri).histories({r.info.run_id: 8 for r in runs}, "eval/linear_top1")
    for r in runs:
        points = sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "eval/linear_top1"))
        assert got[r.info.run_id][0].tolist() == [s for s, _ in points]
        assert got[r.info.run_id][1].tolist() == [v for _, v in points]


def test_budget_table_gives_the_papers_epoch_reduction_with_censoring(tmp_path):
    """Separately scheduled budgets 2 and 4; target = base's final at 4 (0.60) per seed. mto's finals
    0.55 at 2 and 0.65 at 4 reach it at budget 3 (interpolated): 25% fewer epochs. slow never does."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    finals = {"base": {2: 0.50, 4: 0.60}, "mto": {2: 0.55, 4: 0.65}, "slow": {2: 0.40, 4: 0.50}}
    for tracker, name, _, budget, final in budget_study(uri, "eval/linear_top1", finals):
        for e in range(budget + 1):  # epoch 0 = the untrained model at 0.10
            tracker.log_epoch(name, e, {"eval/linear_top1": 0.10 + (final - 0.10) * e / budget})
    report = build_report(uri, parent_run_id=tracker.parent_id, out=tmp_path / "rep")
    table = pd.read_csv(tmp_path / "rep" / "budgets.csv").set_index("arm")
    assert table.loc["mto"].budget_to_target_mean == pytest.approx(3.0)
    assert table.loc["mto"].epoch_reduction_mean == pytest.approx(0.25)
    assert table.loc["base"].budget_to_target_mean == pytest.approx(4.0) and table.loc["base"].reached == 3
    assert table.loc["slow"].reached == 0 and table.loc["slow"].compared_seeds == 3
    assert table.loc["mto"].final_at_2_mean == pytest.approx(0.55)
    md = (tmp_path / "rep" / "ablation.md").read_text()
    assert "> 4 (0/3 reached)" in md and "Budget to target" in md and "(within one schedule)" in md
    assert "budgets" in [p.stem for p in report.files]
    # the within-run table compares each budget with the reference at the same budget
    trials = pd.read_csv(tmp_path / "rep" / "trials.csv").set_index("trial")
    assert trials.loc["mto-s0-epochs=2"].reference_trial == "base-s0-epochs=2"
