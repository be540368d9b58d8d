"""After ``kill -9`` of the driver alone, its local Ray processes live on; ``--resume`` takes over the study the
dead driver held and stops them.

The kill is placed where Ray Tune has written ``tuner.pkl`` but no experiment state yet (the state
files are removed to make that moment certain): ``--resume`` must still know the trials to run."""

import json
import os
import signal
import time

import pytest

from ablations.run.cleanup import _alive
from tests.ablations.conftest import TINY_BASE, run_cli, write_study
from tests.ablations.helpers import start_driver, steps, study_runs

pytestmark = pytest.mark.slow


def test_resume_stops_the_ray_processes_a_killed_driver_left(tmp_path):
    path = write_study(tmp_path, base={**TINY_BASE, "train": {**TINY_BASE["train"], "epochs": 8}})
    driver = start_driver(path, tmp_path)
    deadline = time.monotonic() + 300
    state = None
    while state is None or not state.get("ray_pids") or not list(tmp_path.glob("ray/tiny/*/arms/tuner.pkl")):
        assert driver.poll() is None and time.monotonic() < deadline, "the driver ended before Ray Tune started"
        time.sleep(0.2)
        found = list(tmp_path.glob("ray/tiny/*/ablation.json"))
        state = json.loads(found[0].read_text()) if found else None
    os.kill(driver.pid, signal.SIGKILL)  # the driver only: its Ray node is left behind, as after kill -9
    driver.wait(timeout=30)
    for f in tmp_path.glob("ray/tiny/*/arms/experiment_state*"):
        f.unlink()
    left = [p for p in state["ray_pids"] if _alive(p)]
    assert left, "no Ray process outlived the driver (nothing to test)"

    resumed = run_cli(str(path), "--resume", "--no-report", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "stopped" in resumed.stderr and "left behind by a killed driver" in resumed.stderr
    assert f"took over study tiny from process {driver.pid} on host " in resumed.stderr, resumed.stderr[-3000:]
    assert not [p for p in left if _alive(p)]
    _, children = study_runs(f"sqlite:///{tmp_path}/mlflow.db")  # asserts one run per trial
    assert sorted(children) == ["mto-s0", "simmim-s0"] and all(r.info.status == "FINISHED" for r in children.values())
    for run in children.values():
        assert steps(f"sqlite:///{tmp_path}/mlflow.db", run, "train/loss") == list(range(1, 9))  # each epoch once
