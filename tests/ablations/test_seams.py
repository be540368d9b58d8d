"""The seams between the pipeline's stages: ``Study.resolve`` (trial identity, from Ray's params) and
the MLflow contract (every name the run side writes is one the report side reads)."""

from pathlib import Path

import pytest
from mlflow import MlflowClient

from ablations import contract
from ablations.run.tracking import StudyTracker
from ablations.study import load_study
from tests.ablations.conftest import TINY_BASE, write_study


def test_resolve_gives_a_grid_trial_back_unchanged(tmp_path):
    study = load_study(write_study(tmp_path, seeds=[0, 1], grid={"mto.tau": [0.1, 0.2]}))
    for t in study.trials:
        assert study.resolve({"trial": t.name}, "abc_00001") is t


def test_resolve_names_and_configures_an_optuna_sample(tmp_path):
    study = load_study(
        write_study(
            tmp_path,
            seeds=[3, 4],
            search={"kind": "optuna", "num_samples": 2, "space": {"mto.lambda_e": {"loguniform": [0.01, 1.0]}}},
        )
    )
    spec = study.resolve({"trial": "mto", "__trial_index__": 1, "mto.lambda_e": 0.123456}, "f1e2_00007")
    assert spec.name == "mto-s4-o00007-lambda_e=0.1235"
    assert (spec.arm, spec.seed, spec.grid) == ("mto", 4, {"mto.lambda_e": 0.123456})
    assert spec.config.mto.lambda_e == 0.123456 and spec.config.train.seed == 4
    assert (spec.reference, spec.reference_arm) == ("simmim-s4", "simmim")  # the reference arm, same seed
    assert study.resolve({"trial": "mto", "__trial_index__": 1, "mto.lambda_e": 0.123456}, "f1e2_00007") == spec
    assert study.resolve({"trial": "mto", "__trial_index__": 0, "mto.lambda_e": 0.5}, "f1e2_00008").seed == 3


def test_resolve_refuses_an_invalid_sample(tmp_path):
    from mto.config.errors import ConfigError

    study = load_study(write_study(tmp_path, search={"kind": "optuna", "space": {"mto.tau": {"uniform": [0.1, 1.0]}}}))
    with pytest.raises(ConfigError, match="mto.tau"):
        study.resolve({"trial": "mto", "__trial_index__": 0, "mto.tau": -1.0}, "x_1")


def test_relative_tracking_uris_become_absolute_for_every_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert contract.resolve_tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert contract.resolve_tracking_uri("runs") == str(tmp_path / "runs")
    assert contract.resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_every_tag_a_trial_run_gets_is_named_in_the_contract(tmp_path):
    study = load_study(write_study(tmp_path, grid={"mto.tau": [0.1, 0.2]}))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = StudyTracker(uri, study.name)
    tracker.start_study(study.name, "", {contract.STUDY_FILE: "x"}, {contract.TARGET_METRIC: "eval/knn_top1"})
    trial = study.trials[-1]
    run = MlflowClient(uri).get_run(tracker.run_id(tracker.open_trial(trial)))
    names = {v for k, v in vars(contract).items() if k.isupper() and isinstance(v, str)}
    ours = [k for k in run.data.tags if k.startswith("ablation.")]
    assert ours and all(k in names or k.startswith(contract.GRID_PREFIX) for k in ours), ours
    tags = run.data.tags
    assert (tags[contract.ARM], tags[contract.SEED], tags[contract.TRIAL]) == (trial.arm, str(trial.seed), trial.name)
    assert tags[contract.REFERENCE_TRIAL] == trial.reference and tags[contract.REFERENCE_OF_TRIAL] == "simmim"
    assert run.data.params[contract.EPOCHS_PARAM] == str(trial.config.train.epochs)
    assert Path(MlflowClient(uri).download_artifacts(tracker.parent_id, contract.STUDY_FILE)).read_text() == "x"


def test_budgets_expand_into_separately_scheduled_trials_paired_at_the_same_budget(tmp_path):
    base = {**TINY_BASE, "eval": {**TINY_BASE["eval"], "affinity_epochs": [2]}}  # inside both budgets
    study = load_study(write_study(tmp_path, seeds=[0, 1], budgets=[4, 2], base=base))
    assert len(study.trials) == 2 * 2 * 2
    t = study.resolve({"trial": "mto-s1-epochs=4"})
    assert t.config.train.epochs == 4 and t.grid == {"train.epochs": 4} and t.reference == "simmim-s1-epochs=4"
    assert {s.config.train.epochs for s in study.trials} == {2, 4}
