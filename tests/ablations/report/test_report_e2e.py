"""The quickstart study, shrunk, on real Ray and MLflow: its report is complete and its numbers
match a recomputation straight from the MLflow histories."""

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from ablations.study import load_study
from tests.ablations.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

SHRINK = [
    "base.data.max_train=256",
    "base.model.embed_dim=32",
    "base.model.depth=2",
    "base.model.num_heads=2",
    "base.train.epochs=4",
    "base.train.batch_size=64",
    "base.train.warmup_epochs=1",
    "base.eval.every=1",
    "base.eval.probe_steps=20",
    "base.eval.affinity_epochs=[4]",
]


def test_quickstart_report_has_every_format_and_numbers_from_the_histories(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sets = [*SHRINK, f"storage={tmp_path / 'ray'}", f"tracking.uri={uri}"]
    proc = run_cli(str(ROOT / "studies" / "quickstart.yaml"), *[a for s in sets for a in ("--set", s)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (folder,) = (tmp_path / "reports" / "quickstart").iterdir()
    names = {p.name for p in folder.iterdir()}
    assert {
        "ablation.md",
        "ablation.csv",
        "ablation.tex",
        "report.html",
        "trials.csv",
        "learning_curves.png",
        "heterogeneity_depth.png",
        "affinity_maps.png",
        "epochs_to_target.png",
    } <= names
    assert "RAUC" in proc.stdout and "simmim" in proc.stdout

    client = MlflowClient(uri)
    metric = load_study(ROOT / "studies" / "quickstart.yaml").spec.target.metric
    trials = pd.read_csv(folder / "trials.csv").set_index("trial")
    assert sorted(trials.index) == ["simmim+mto-s0", "simmim+mto-s1", "simmim-s0", "simmim-s1"]
    curves = {}
    for name, row in trials.iterrows():
        hist = sorted((m.step, m.value) for m in client.get_metric_history(row.run_id, metric))
        curves[name] = (np.array([e for e, _ in hist], float), np.array([v for _, v in hist]))
        assert [e for e, _ in hist] == [0, 1, 2, 3, 4]  # from epoch 0, the untrained model
    for name, row in trials.iterrows():
        e, v = curves[name]
        ref_e, ref_v = curves[row.reference_trial]
        assert row.reference_trial == f"simmim-s{row.seed}" and row.paired
        assert row.final == pytest.approx(v[-1])
        assert row.auc == pytest.approx(((v[1:] + v[:-1]) / 2 * np.diff(e)).sum() / (e[-1] - e[0]))
        assert row.rauc == pytest.approx(
            row.auc / (((ref_v[1:] + ref_v[:-1]) / 2 * np.diff(ref_e)).sum() / (e[-1] - e[0]))
        )
        assert row.delta_final == pytest.approx(v[-1] - ref_v[-1])
        reached = np.nonzero(v >= ref_v[-1])[0]
        if reached.size == 0:
            assert np.isnan(row.epochs_to_target)
        else:
            i = reached[0]
            expected = e[0] if i == 0 else e[i - 1] + (ref_v[-1] - v[i - 1]) / (v[i] - v[i - 1]) * (e[i] - e[i - 1])
            assert row.epochs_to_target == pytest.approx(expected)
    table = pd.read_csv(folder / "ablation.csv").set_index("arm")
    for arm in ("simmim", "simmim+mto"):
        mine = trials[trials.arm == arm]
        assert table.loc[arm].final_mean == pytest.approx(mine.final.mean())
        assert table.loc[arm].auc_mean == pytest.approx(mine.auc.mean())
        assert np.isnan(table.loc[arm].final_ci_low)  # two seeds: no interval is claimed
