"""Every MIM method trains on digits through ``python -m ablations.run``, on its authors' backbone (no
absolute position embedding, one shared relative position bias, layer scale 0.1); with ``tracking.encoder: none``
no trial keeps its weights."""

import pytest
from mlflow import MlflowClient

from mto.methods.registry import names
from tests.ablations.conftest import TINY_BASE, run_cli, write_study
from tests.ablations.helpers import steps, study_runs

pytestmark = pytest.mark.slow

METHODS = names()


def test_each_method_lowers_its_loss_and_logs_probe_curves_through_the_suite(tmp_path):
    variants = {m: {"mim.method": m} for m in METHODS}
    with_mto = ("bootmae", "conmim", "dtm")  # MTO on the decoders (BootMAE) and on the encoder (ConMIM, DTM)
    variants.update({f"{m}+mto": {"mim.method": m, "mto.lambda_e": 0.1} for m in with_mto})
    authors = {**TINY_BASE, "model": {**TINY_BASE["model"], "pos_embed": "rel_bias", "layer_scale": 0.1}}
    path = write_study(
        tmp_path,
        base=authors,
        variants=variants,
        target={"reference": "simmim", "reference_of": {f"{m}+mto": m for m in with_mto}},
        tracking={"uri": f"sqlite:///{tmp_path}/mlflow.db", "encoder": "none"},
    )
    proc = run_cli(str(path), "--no-report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _, children = study_runs(uri)
    client = MlflowClient(uri)
    for name in [f"{m}-s0" for m in METHODS] + [f"{m}+mto-s0" for m in with_mto]:
        run = children[name]
        assert run.info.status == "FINISHED", name
        history = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
        loss = [m.value for m in history]
        assert len(loss) == 3 and loss[-1] < loss[0], (name, loss)
        for probe in ("eval/linear_top1", "eval/knn_top1"):
            assert steps(uri, run, probe) == [0, 1, 2, 3], (name, probe)  # epoch 0: before training
        assert client.list_artifacts(run.info.run_id, "encoder") == [] and "ablation.encoder" not in run.data.tags
    assert children["dtm-s0"].data.params["mim.method"] == "dtm"
    assert {children[n].data.params["model.pos_embed"] for n in children} == {"rel_bias"}
    assert children["dtm+mto-s0"].data.tags["ablation.reference_trial"] == "dtm-s0"
    assert children["conmim+mto-s0"].data.tags["ablation.reference_trial"] == "conmim-s0"
    assert steps(uri, children["bootmae-s0"], "train/loss_feat") == [1, 2, 3]
