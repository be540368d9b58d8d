"""The quickstart study as a user runs it, on real Ray and MLflow: its report is complete, its table is the one
README.md and docs/quickstart/ show (``make docs-quickstart`` writes them), and its numbers match a recomputation
straight from the MLflow histories; the commands of docs/encoders.md, run as written, register the selected trial's
encoder, fetch it, load it with timm and fine-tune it."""

import importlib.util
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from ablations.study import load_study
from tests.ablations.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location("refresh", ROOT / "docs" / "quickstart" / "refresh.py")
refresh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(refresh)


def documented_commands() -> list[str]:
    """The command lines of the bash block of docs/encoders.md."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "docs" / "encoders.md").read_text(), re.DOTALL)
    return [line for line in block.group(1).splitlines() if line.strip()]


def run_documented(line: str, cwd, run_id: str = "") -> subprocess.CompletedProcess:
    """One documented command as a user runs it: ``python`` is this interpreter, ``$RUN_ID`` the selected run."""
    command = shlex.split(line.replace("$RUN_ID", run_id))
    assert command[0] == "python", line
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *command[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_quickstart_report_has_every_format_and_numbers_from_the_histories_and_its_encoder_is_usable(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"  # the quickstart's own store seen from tmp_path: sqlite:///mlflow.db
    sets = [f"storage={tmp_path / 'ray'}", f"tracking.uri={uri}"]
    study = ROOT / "studies" / "quickstart.yaml"
    ran = run_cli(str(study), "--no-report", *[a for s in sets for a in ("--set", s)], cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    (tmp_path / "studies").symlink_to(ROOT / "studies")  # the documented commands run where the quickstart ran
    register, fetch, timm_line, finetune = documented_commands()
    proc = run_documented(register, tmp_path)  # the report, then the selected trial's encoder registered
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
    table = refresh.first_table((folder / "ablation.md").read_text())
    readme = (ROOT / "README.md").read_text().split(refresh.START, 1)[1].split(refresh.END, 1)[0]
    stale = "is not what the quickstart reports at this code: make docs-quickstart writes it"
    assert refresh.first_table(readme) == table, f"README.md's quickstart table {stale}"
    assert refresh.first_table((ROOT / "docs" / "quickstart" / "ablation.md").read_text()) == table, f"docs {stale}"

    client = MlflowClient(uri)
    cfg = load_study(ROOT / "studies" / "quickstart.yaml")
    metric, every, epochs = cfg.spec.target.metric, cfg.trials[0].config.eval.every, cfg.trials[0].config.train.epochs
    trials = pd.read_csv(folder / "trials.csv").set_index("trial")
    assert sorted(trials.index) == ["simmim+mto-s0", "simmim+mto-s1", "simmim-s0", "simmim-s1"]
    curves = {}
    for name, row in trials.iterrows():
        hist = sorted((m.step, m.value) for m in client.get_metric_history(row.run_id, metric))
        curves[name] = (np.array([e for e, _ in hist], float), np.array([v for _, v in hist]))
        assert [e for e, _ in hist] == list(range(0, epochs + 1, every))  # from epoch 0, the untrained model
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

    # the trial selected on validation: the best seed of the selected row, named with its encoder
    arm = re.search(r"Selected on validation \([^)]*, mean final over seeds\): (\S+)\.", proc.stdout).group(1)
    chosen = trials[trials.arm == arm].selection_val_final.idxmax()
    run_id = trials.loc[chosen].run_id
    named = f"trial {chosen}, run {run_id}; its encoder is `runs:/{run_id}/encoder`"
    assert named in (folder / "ablation.md").read_text()
    said = " ".join(proc.stderr.split())
    assert f"registered the encoder of trial {chosen} (run {run_id}) as model quickstart-encoder, version 1" in said
    version = client.get_model_version("quickstart-encoder", "1")
    assert version.run_id == run_id and version.status == "READY"  # the Models page links it to its run
    assert client.get_run(run_id).info.status == "FINISHED"
    for name, row in trials.iterrows():  # every trial kept its own
        assert client.get_run(row.run_id).data.tags["ablation.encoder"] == "encoder", name

    proc = run_documented(fetch, tmp_path, run_id)
    assert proc.returncode == 0 and proc.stdout.strip() == str(tmp_path / "encoder"), proc.stderr
    assert sorted(p.name for p in (tmp_path / "encoder").iterdir()) == ["config.json", "model.safetensors"]
    proc = run_documented(timm_line, tmp_path, run_id)
    assert proc.returncode == 0 and proc.stdout.strip() == "(1, 16, 16)", proc.stderr
    proc = run_documented(finetune, tmp_path, run_id)
    assert proc.returncode == 0, proc.stderr
    assert "on digits: 5 epochs" in proc.stdout and re.search(r"^finetune/top1 0\.\d{4}$", proc.stdout, re.M)
