"""A study's cost before it runs: a dry run measures each model shape's pace once (in a child process: the driver
loads no torch) and says the work and the wall time; a study far too long for this machine is said to be; the
parent run's ETA tag follows the board's time left while the study runs."""

import io
import json
import time

import pytest
from mlflow import MlflowClient

from ablations.contract import ETA
from ablations.run.callbacks import ETA_EVERY_S
from ablations.run.estimate import estimate, keep, summary
from ablations.run.invocations import study_layout
from ablations.study import load_study
from ablations.study.cost import PACE_KEYS, study_work
from tests.ablations.conftest import ROOT, run_cli, write_study
from tests.ablations.helpers import driver_session


@pytest.mark.slow
@pytest.mark.no_store
def test_a_dry_run_measures_each_shape_once_and_says_the_work_and_the_wall_time(tmp_path):
    path = write_study(tmp_path, seeds=[0, 1])  # 2 arms x 2 seeds, 2 shapes (MTO's loss on or off), 2 at a time
    first = run_cli(str(path), "--dry-run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    work = study_work(load_study(path))
    assert "measuring the pace of 2 model shape(s) on this machine" in first.stderr
    assert f"work: 4 trials, 12 pre-training epochs: {work.total('train_images'):,} images" in first.stdout
    assert "wall time: about " in first.stdout and "2 at a time" in first.stdout
    paces = study_layout(load_study(path)).paces
    kept = next(iter(json.loads(paces.read_text()).values()))
    assert sorted(kept) == sorted(work.shapes) and all(set(PACE_KEYS) <= set(p) for p in kept.values())
    again = run_cli(str(path), "--dry-run", cwd=tmp_path)
    assert "measuring" not in again.stderr and again.stdout.splitlines()[-2:] == first.stdout.splitlines()[-2:]
    assert not (tmp_path / "mlflow.db").exists()  # a dry run starts nothing


def test_a_study_far_too_long_for_this_machine_is_said_to_be_and_one_needing_gpus_is_not_guessed(tmp_path):
    study = load_study(ROOT / "studies" / "quickstart.yaml", ["base.train.epochs=3000"])
    slow = {k: 0.0 for k in PACE_KEYS} | {"step_s": 0.5}
    paces = tmp_path / "paces.json"
    keep(paces, {s: slow for s in study_work(study).shapes})
    said = summary(estimate(study, paces, tmp_path, cpus=2, gpus=0, measure_missing=False), paces)
    assert said[1].startswith("wall time: about ") and " h for the trials on this machine (2 CPUs)" in said[1]
    assert said[2].startswith("this is a long study for this machine (2 CPUs): about ")
    gpu = load_study(ROOT / "studies" / "quickstart.yaml", ["resources.gpu=0.5"], check_paths=False)
    said = summary(estimate(gpu, paces, tmp_path, cpus=2, gpus=0, measure_missing=True), paces)
    assert "no estimate (its trials need GPUs and this machine has none to measure them on)" in said[1]


def test_the_parent_run_says_when_the_study_will_end(tmp_path, mlflow_schema):
    study, uri, tracker, board, session = driver_session(tmp_path, mlflow_schema, epochs=4, out=io.StringIO())
    session._tag_eta()  # nothing measured yet: no tag
    board.start("t1", study.trials[0].name)
    board.update("t1", 1, None)
    board.update("t1", 2, None)
    board.rows["t1"].started -= 10.0  # two epochs in 10 s: the other trial's 4 epochs and these 2 take 30 s
    session._tag_eta()
    assert tracker.flush()
    tag = MlflowClient(uri).get_run(tracker.parent_id).data.tags[ETA]
    assert tag.startswith("about 30 s left, ends about ") and tag.endswith(" UTC")
    board.update("t1", 3, None)
    session._tag_eta()  # within ETA_EVERY_S of the last look: not looked at again
    assert session.eta[1] == tag and ETA_EVERY_S >= 10
    session.eta = (time.monotonic() - ETA_EVERY_S, tag)
    session._tag_eta()
    assert tracker.flush() and MlflowClient(uri).get_run(tracker.parent_id).data.tags[ETA] != tag
