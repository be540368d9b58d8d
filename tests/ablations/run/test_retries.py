"""What ``--resume`` runs again, on a real local Ray cluster and a real MLflow store: a trial failed by a plain bug
(a shape error, which names no trial's own fault) runs again, also when the driver that saw it fail could not mark
its run; failing the same way twice, it is failed for good with both reasons kept. A finished run is never marked
FAILED later. Trial-side GPU memory errors are the trial's own, with what to change.

The bug is real code in the worker: ``sitecustomize`` (on the workers' ``PYTHONPATH``) wraps the unit's epoch to
raise PyTorch's shape error from the second epoch of the one arm whose learning rate is 0.00123."""

import textwrap

import pytest
import torch
from mlflow import MlflowClient

from ablations.contract import FAILED_BEFORE, FAILURE, lost_machine, own_failure, same_failure
from ablations.run.tracking import StudyTracker
from ablations.run.trainable import out_of_memory
from ablations.study import load_study
from ablations.study.schema import ResourcesSpec
from mto.config import TrialConfig
from tests.ablations.conftest import ROOT, TINY_BASE, run_cli, write_study
from tests.ablations.helpers import steps, study_runs

BUG = "RuntimeError: mat1 and mat2 shapes cannot be multiplied (64x32 and 48x32)"
INJECT = textwrap.dedent(
    """
    import importlib.abc, importlib.machinery, sys

    class Bug(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "mto.training.unit":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            load = spec.loader.exec_module

            def exec_module(module):
                load(module)
                epoch = module.Unit.train_epoch

                def train_epoch(self):
                    if self.epoch >= 1 and self.live[0].cfg.train.base_lr == 0.00123:
                        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (64x32 and 48x32)")
                    return epoch(self)

                module.Unit.train_epoch = train_epoch

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Bug())
    """
)


def test_reasons_that_are_the_same_failure_and_the_trials_own():
    assert same_failure(BUG, BUG)
    assert same_failure("ActorDiedError: worker 1234 at 0x7f00aa died", "ActorDiedError: worker 99 at 0x7f00bb died")
    assert not same_failure(BUG, "RuntimeError: CUDA error: an illegal memory access was encountered")
    assert not same_failure("", "")  # no reason recorded is no evidence
    assert not own_failure(BUG) and not lost_machine(BUG)  # a bug: run again once, failed for good the second time
    for lost in ("ActorDiedError: The actor died unexpectedly", "NodeDiedError: node 3 died", "OutOfMemoryError: x"):
        assert lost_machine(lost) and not own_failure(lost)  # never failed for good
    unavailable = "ActorUnavailableError: The actor {} is unavailable: RpcError: RPC error: Socket closed rpc_code: 14"
    first, second = unavailable.format("518d724470163001f82c2992"), unavailable.format("263cdb136d31311414a4f5f1")
    assert same_failure(first, second) and lost_machine(second)  # two node losses alike: still not for good
    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)")
    reason = out_of_memory(error, TrialConfig(), ResourcesSpec(gpu=0.25, fuse=4))
    assert reason.startswith("the GPU ran out of memory (CUDA out of memory. Tried to allocate 2.00 GiB")
    for hint in ("train.batch_size (now 128)", "resources.gpu=0.25 puts 4 trials on each GPU", "resources.fuse=4"):
        assert hint in reason, reason
    assert "\n" not in reason and own_failure(f"GPUOutOfMemoryError: {reason}")


def test_a_finished_run_is_never_marked_failed_later(tmp_path):
    study = load_study(write_study(tmp_path))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = StudyTracker(uri, study.name)
    tracker.start_study(study.name, "", {}, {})
    name = tracker.open_trial(study.trials[0])
    tracker.end_trial(name, "FINISHED")
    tracker.end_trial(name, "FAILED", "ActorDiedError: the worker died")  # a late event of its Ray trial
    run = MlflowClient(uri).get_run(tracker.run_id(name))
    assert run.info.status == "FINISHED" and FAILURE not in run.data.tags


@pytest.mark.slow
def test_a_bug_runs_again_once_even_unmarked_then_is_failed_for_good(tmp_path):
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(INJECT)
    env = {"PYTHONPATH": f"{ROOT}:{inject}"}
    path = write_study(tmp_path, variants={"buggy": {"train.base_lr": 0.00123}}, base=TINY_BASE)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)

    def drive(*args: str) -> str:
        proc = run_cli(str(path), "--no-report", *args, cwd=tmp_path, env=env)
        assert proc.returncode == 1, proc.stderr[-3000:]  # failed, not interrupted: the run was ended
        run = study_runs(uri)[1]["buggy-s0"]
        assert run.info.status == "FAILED" and run.data.tags[FAILURE] == BUG, run.data.tags
        return proc.stderr

    drive()
    run_id = study_runs(uri)[1]["buggy-s0"].info.run_id
    client.delete_tag(run_id, FAILURE)  # as if the driver was killed before it could mark the run
    client.update_run(run_id, status="RUNNING")
    said = drive("--resume")
    assert "running again" not in said  # nothing was marked, yet Ray Tune's errored trial ran again
    assert FAILED_BEFORE not in study_runs(uri)[1]["buggy-s0"].data.tags

    # marked FAILED from the machine's side (a plain bug names no trial's own fault): once more
    said = drive("--resume")
    assert "running again from their last checkpoints 1 trials the machine failed" in said, said
    assert study_runs(uri)[1]["buggy-s0"].data.tags[FAILED_BEFORE] == BUG

    said = drive("--resume")  # the same way twice: failed for good, both reasons kept, not run
    assert "not running again 1 trials that failed the same way" in said and "running again from" not in said, said
    run = study_runs(uri)[1]["buggy-s0"]
    assert run.data.tags[FAILURE] == BUG and run.data.tags[FAILED_BEFORE] == BUG
    assert steps(uri, run, "train/loss") == [1]  # its one good epoch, once, across four drivers
