"""Faults of the machine, not of the trials, on a real local Ray cluster and a real MLflow store: a trial's
worker killed, the driver stopped by SIGTERM (as schedulers stop jobs), its newest checkpoints truncated, a
decision Ray Tune held for the killed trial left in its state; ``--resume`` then finishes the study, running
again only what the machine failed, each trial through every epoch."""

import json
import os
import signal
import sys

import pytest

from ablations.run.cleanup import parents
from ablations.run.trainable import read_state
from tests.ablations.conftest import run_cli, write_study
from tests.ablations.helpers import start_driver, steps, study_runs, wait_for

pytestmark = pytest.mark.slow

EPOCHS = 12


def _descendants(pid: int) -> list[int]:
    of = parents()
    found, frontier = [], {pid}
    while frontier:
        frontier = {child for child, parent in of.items() if parent in frontier}
        found += sorted(frontier)
    return found


def _worker_of(driver, trial: str) -> int:
    """The Ray worker process training ``trial`` (Ray Tune runs it in the trial's own folder)."""
    for pid in _descendants(driver.pid):
        try:
            if os.path.basename(os.readlink(f"/proc/{pid}/cwd")).startswith(trial):
                return pid
        except OSError:
            continue
    raise AssertionError(f"no worker runs {trial}")


def test_resume_reruns_what_the_machine_failed_past_a_truncated_checkpoint_after_sigterm(tmp_path):
    long = {"train.epochs": EPOCHS, "eval.every": 4, "eval.affinity_epochs": []}
    path = write_study(tmp_path, variants={"diverges": {"train.base_lr": 1.0e30}, "killed": long, "truncated": long})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    driver = start_driver(path, tmp_path)

    def epochs(children, name):
        return len(steps(uri, children[name], "train/loss")) if name in children else 0

    wait_for(driver, uri, lambda c: 3 <= epochs(c, "killed-s0") < EPOCHS - 3)
    os.kill(_worker_of(driver, "killed-s0"), signal.SIGKILL)  # as the kernel's OOM killer would
    children = wait_for(
        driver, uri, lambda c: c["killed-s0"].info.status == "FAILED" and 3 <= epochs(c, "truncated-s0") < EPOCHS - 2
    )
    machine_reason = children["killed-s0"].data.tags["ablation.failure"]
    assert not machine_reason.startswith(("NonFiniteLossError", "ConfigError")), machine_reason
    driver.send_signal(signal.SIGTERM)  # the driver alone, as SLURM, Kubernetes or timeout(1) stop a job
    output = driver.communicate(timeout=120)[0]
    assert driver.returncode == 143, output
    assert f"resume with: {sys.executable} -m ablations.run" in output, output
    parents, children = study_runs(uri)
    assert parents[0].info.status == "KILLED" and children["truncated-s0"].info.status == "KILLED"

    checkpoints = sorted((tmp_path / "ray").glob("tiny/*/arms/truncated-s0*/checkpoint_*/state.pt"))
    assert len(checkpoints) >= 2, checkpoints  # Ray Tune's latest and the one kept before it (num_to_keep: 2)
    oldest_epoch = int(read_state(str(checkpoints[0].parent))["members"]["truncated-s0"]["epoch"])  # a unit of one
    for state in checkpoints[1:]:  # a crash mid-write; the oldest kept one stays whole
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])

    # A worker killed while its checkpoint is being saved (as happens above at random) leaves a STOP that Ray
    # Tune held back for its trial in the experiment state; made certain here, it must not stop the resumed trial.
    # Ray's private names this relies on: the experiment state file's "runner_data" (the TuneController's state,
    # which TuneController.resume restores through TuneController.__setstate__) and "trial_data", and the state's
    # _cached_trial_decisions (ablations.run.held_decisions.RAY_NAMES, checked by test_ray_names.py).
    state_file = sorted((tmp_path / "ray").glob("tiny/*/arms/experiment_state-*.json"))[-1]
    state = json.loads(state_file.read_text())
    trials = [json.loads(trial) for trial, _ in state["trial_data"]]
    held = next(t["trial_id"] for t in trials if t["config"]["trial"] == "killed-s0")
    state["runner_data"]["_cached_trial_decisions"][held] = "STOP"
    state_file.write_text(json.dumps(state))

    resumed = run_cli(str(path), "--resume", "--no-report", cwd=tmp_path)
    assert resumed.returncode == 1, resumed.stderr  # the NaN trial stays failed
    assert "running again from their last checkpoints 1 trials the machine failed" in resumed.stderr, resumed.stderr
    assert f"killed-s0 ({machine_reason[:40]}" in resumed.stderr
    assert "truncated-s0: checkpoint_" in resumed.stderr and " unreadable (" in resumed.stderr, resumed.stderr
    parents, children = study_runs(uri)
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    killed, truncated, diverges = children["killed-s0"], children["truncated-s0"], children["diverges-s0"]
    assert killed.info.status == "FINISHED" and "ablation.failure" not in killed.data.tags
    assert killed.data.tags["ablation.failed_before"] == machine_reason
    assert truncated.info.status == "FINISHED"
    note = truncated.data.tags["ablation.checkpoint_fallback"]
    assert note.startswith("checkpoint_") and "unreadable (RuntimeError" in note and "started over" not in note, note
    assert int(truncated.data.tags["ablation.resumed_from_epoch"]) == oldest_epoch  # the readable one kept before
    for run in (killed, truncated):
        assert steps(uri, run, "train/loss") == list(range(1, EPOCHS + 1)), run.info.run_name  # each epoch once
    assert diverges.info.status == "FAILED"
    assert diverges.data.tags["ablation.failure"].startswith("NonFiniteLossError")
    assert "failed_before" not in " ".join(diverges.data.tags)
