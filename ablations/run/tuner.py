"""The Ray Tune ``Tuner`` of one phase of an invocation: new, or restored from the experiment state an earlier
driver of the same invocation left (``--resume``)."""

from __future__ import annotations

from ablations.run.callbacks import StudyCallback
from ablations.run.held_decisions import forget_held_decisions
from ablations.run.layout import Invocation
from ablations.run.trainable import trial_function
from ablations.study import Study


def make_tuner(
    study: Study,
    invocation: Invocation,
    phase: str,
    space: dict,
    kwargs: dict,
    key: str,
    settled: frozenset[str],
):
    """The phase's Tuner: its trials run ``trial_function`` with the study's resources, retried ``retries`` times,
    their events sent to the driver session under ``key``; ``settled``: trials an earlier driver ended for good."""
    from ray import tune

    spec = study.spec
    threads = study.threads
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    trainable = tune.with_resources(
        tune.with_parameters(trial_function, study=study, threads=threads, settled=settled), resources
    )
    path = invocation.experiment(phase)  # Ray Tune's storage layer: a folder, or under a URI (pyarrow file systems)
    if tune.Tuner.can_restore(path):
        # The space is given again: a driver killed after Ray Tune wrote tuner.pkl but before its first
        # experiment state leaves nothing else to rebuild the trials from (Ray ignores it otherwise).
        # Errored trials resume from their last checkpoint: those settled in MLflow (finished, failed on
        # their own or failed for good) return at once; the others, which the machine failed, run on,
        # whether or not the driver that saw them fail could mark their runs.
        forget_held_decisions()
        return tune.Tuner.restore(
            path, trainable=trainable, param_space=space, resume_unfinished=True, resume_errored=True
        )
    run_config = tune.RunConfig(
        name=phase,
        storage_path=invocation.tune_storage,
        callbacks=[StudyCallback(key)],
        verbose=0,
        failure_config=tune.FailureConfig(max_failures=spec.retries),
        sync_config=tune.SyncConfig(sync_period=1),  # a storage URI gets the experiment state as often as a folder
        # the one before the latest: a fallback; with a URI all, as its experiment state (uploaded every few
        # seconds) may name a checkpoint older than the last two
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None if spec.storage_uri else 2),
    )
    return tune.Tuner(trainable, param_space=space, tune_config=tune.TuneConfig(**kwargs), run_config=run_config)
