"""Running a study on Ray Tune: one invocation = one MLflow parent run and one folder, laid out by
``ablations.run.layout`` (its state, the journal of kept MLflow writes, Ray Tune's experiments ``arms`` and
``search``).

Ray's experiment state (with each trial's last two checkpoints) is what ``--resume`` restores:
finished trials and trials that failed on their own (a NaN loss) are not run again; unfinished ones,
and those the machine failed (a full disk, a killed worker), restart from their last readable
checkpoint; the driver reopens the same MLflow runs, skipping epochs it already logged. SIGTERM
stops a study as Ctrl-C does.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ablations.contract import (
    EPOCH,
    OBJECTIVE,
    REFERENCE_ARM,
    REPORT_EPOCHS,
    RESOLVED_TRIALS,
    STUDY_FILE,
    TARGET_FRACTION,
    TARGET_METRIC,
    resolve_tracking_uri,
)
from ablations.run.callbacks import SESSIONS, DriverSession, StudyCallback
from ablations.run.cleanup import ray_pids, stop_stale_ray
from ablations.run.cluster import (
    ClusterError,
    check_resources,
    compile_cache,
    init_ray,
    ray_environment,
    shutdown_ray,
)
from ablations.run.files import dump_json, safe_name
from ablations.run.hold import StudyHeld, StudyHold
from ablations.run.layout import Invocation, StudyLayout
from ablations.run.outcome import StudyOutcome, close_study
from ablations.run.progress import TrialBoard
from ablations.run.store import check_tracking
from ablations.run.tracking import StudyTracker
from ablations.run.trainable import trial_function
from ablations.study import Study, StudyError, unit_name
from mto import to_dict


def study_layout(study: Study) -> StudyLayout:
    """Where the driver keeps the study's files: ``driver_storage``, with Ray Tune's experiments under a
    ``storage`` URI when there is one."""
    spec = study.spec
    return StudyLayout.of(spec.driver_storage, study.name, spec.storage if spec.storage_uri else None)


def _pick_invocation(layout: StudyLayout, study: Study, resume: bool) -> Invocation:
    """This invocation of the study: new, or the latest on resume."""
    if not resume:
        return layout.new_invocation()
    latest = layout.latest()
    if latest is None:
        raise StudyError(study.source, [f"--resume: no earlier invocation of study {study.name!r} under {layout.root}"])
    return latest


def _stop_on_sigterm(session: DriverSession) -> Any:
    """SIGTERM (a scheduler's stop, ``timeout``, ``kill``) stops the study as Ctrl-C does: Ray Tune saves
    its state, open runs are marked KILLED and ``--resume`` goes on. Returns the handler it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> None:
        session.terminated = True
        signal.raise_signal(signal.SIGINT)  # Ray Tune's graceful stop (outside a fit: KeyboardInterrupt)

    return signal.signal(signal.SIGTERM, stop)


class TrialNamer:
    """Ray's trial names and folder names: the unit's (``Study.unit``; picklable: Ray stores it with the tuner)."""

    def __init__(self, study: Study):
        self.study = study

    def name(self, trial: Any) -> str:
        return unit_name(self.study.unit(trial.config, trial.trial_id))

    def dirname(self, trial: Any) -> str:
        return safe_name(self.name(trial))


def _search_space(study: Study) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = {"trial": study.search_arm}  # Repeater adds the seed index
    for path, d in study.spec.search.space.items():
        if d.loguniform:
            space[path] = tune.loguniform(*d.loguniform)
        elif d.uniform:
            space[path] = tune.uniform(*d.uniform)
        elif d.int:
            space[path] = tune.randint(d.int[0], d.int[1] + 1)
        else:
            space[path] = tune.choice(d.choice)
    return space


def _phases(study: Study) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, param space, TuneConfig kwargs) of each Ray Tune experiment of the study."""
    from ray import tune

    namer = TrialNamer(study)
    # reuse_actors: a worker that ended a trial starts the next one (no new process importing torch per trial)
    common = dict(
        max_concurrent_trials=study.spec.max_concurrent,
        trial_name_creator=namer.name,
        trial_dirname_creator=namer.dirname,
        reuse_actors=True,
    )
    phases = [("arms", {"trial": tune.grid_search(list(study.units))}, common)]  # one Ray trial per unit
    search = study.spec.search
    if search.kind == "optuna":
        import optuna
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search import Repeater
        from ray.tune.search.optuna import OptunaSearch

        # Each sample runs on every search seed; Optuna sees the mean objective over them.
        seeds = len(study.spec.search_seeds)
        searcher = Repeater(
            OptunaSearch(metric=OBJECTIVE, mode=search.mode, sampler=optuna.samplers.TPESampler(seed=0)),
            repeat=seeds,
            set_index=True,
        )
        kwargs = dict(common, search_alg=searcher, num_samples=search.num_samples * seeds)
        if search.asha:
            epochs = study.search_config(study.search_arm, study.spec.seeds[0], {}).train.epochs
            kwargs["scheduler"] = ASHAScheduler(
                time_attr=EPOCH,
                metric=OBJECTIVE,
                mode=search.mode,
                max_t=epochs,
                grace_period=search.asha.grace_period,
                reduction_factor=search.asha.reduction_factor,
            )
        phases.append(("search", _search_space(study), kwargs))
    return phases


def _tuner(
    study: Study,
    invocation: Invocation,
    phase: str,
    space: dict,
    kwargs: dict,
    key: str,
    settled: frozenset[str],
):
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
        _forget_held_decisions()
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


def _forget_held_decisions() -> None:
    """Make Ray Tune's restore drop the decisions an earlier driver held back for trials.

    Ray Tune (2.x) holds a decision (STOP, CONTINUE) back while a trial's checkpoint is being saved, saves the
    held decisions with its experiment state, and restores them on ``Tuner.restore``. A trial whose worker died
    while a checkpoint was being saved leaves a held STOP that nothing pops (its save never resolves); resumed, the
    trial trains one epoch, its first save pops that STOP, and it ends TERMINATED with its remaining epochs
    untrained. No decision of an earlier driver applies to a trial it runs again, so none is restored."""
    from ray.tune.execution.tune_controller import TuneController

    restore = TuneController.__setstate__  # used by TuneController.resume only
    if getattr(restore, "drops_held_decisions", False):
        return

    def __setstate__(self, state: dict[str, Any]) -> None:
        restore(self, {**state, "_cached_trial_decisions": {}, "_queued_trial_decisions": {}})

    __setstate__.drops_held_decisions = True
    TuneController.__setstate__ = __setstate__


def _interrupted_state(study: Study, invocation: Invocation) -> dict[str, Any]:
    """The state an earlier ``invocation`` left; refused when the study has changed since."""
    state = json.loads(invocation.state.read_text())
    if state["study"] != json.loads(dump_json(study.raw)):  # compared as stored (JSON)
        raise StudyError(
            study.source,
            [
                f"--resume: the study differs from the interrupted invocation in {invocation.folder}; "
                "resume it with the same file and --set values, or start afresh"
            ],
        )
    return state


def _start_parent_run(study: Study, tracker: StudyTracker, resume_id: str | None) -> str:
    """The study's MLflow parent run (reopened on resume), with the study file, every trial's resolved config
    and what the report compares."""
    files = {
        STUDY_FILE: Path(study.source).read_text() if Path(study.source).is_file() else "",
        RESOLVED_TRIALS: dump_json(
            {
                t.name: {
                    "arm": t.arm,
                    "seed": t.seed,
                    "grid": t.grid,
                    "reference": t.reference,
                    "config": to_dict(t.config),
                }
                for t in study.trials
            }
        ),
    }
    target = {
        TARGET_METRIC: study.spec.target.metric,
        TARGET_FRACTION: str(study.spec.target.fraction),
        REFERENCE_ARM: study.spec.reference,
        REPORT_EPOCHS: ",".join(str(e) for e in study.spec.report_epochs or []),
    }
    return tracker.start_study(study.name, study.spec.description, files, target, resume_id=resume_id)


def run_study(
    study: Study,
    *,
    resume: bool = False,
    tracking_uri: str | None = None,
    address: str | None = None,
    sets: list[str] | None = None,
) -> StudyOutcome:
    """Run (or resume) every trial of ``study`` on Ray Tune, tracked in MLflow, holding the study
    (``ablations.run.hold``) from before anything is written until every run is ended.

    Raises:
        StudyError: the study cannot start here (another driver holds it, nothing to resume, resources the
            cluster lacks, changed study).
        TrackingError: the tracking store is unreachable (checked before Ray starts).
    """
    layout = study_layout(study)
    here = _pick_invocation(layout, study, resume)
    state = _interrupted_state(study, here) if resume else {}
    uri = resolve_tracking_uri(tracking_uri or state.get("tracking_uri") or study.spec.tracking.uri)
    check_tracking(uri)
    hold = StudyHold(layout.lock, study.name)
    try:
        hold.take()  # before anything is written
    except StudyHeld as err:
        raise StudyError(study.source, [str(err)]) from None
    if hold.taken_over:
        print(
            f"took over study {study.name} from {hold.taken_over}: that driver ended without letting it go "
            "(killed, or its machine lost)",
            file=sys.stderr,
        )
    try:
        return _run_held(study, resume, address, sets, layout, here, state, uri)
    finally:
        hold.release()


def _run_held(
    study: Study,
    resume: bool,
    address: str | None,
    sets: list[str] | None,
    layout: StudyLayout,
    here: Invocation,
    state: dict,
    uri: str,
) -> StudyOutcome:
    ray_environment()
    compile_env = compile_cache(layout.compile_cache)
    if address is None:
        stale = stop_stale_ray(layout.latest())
        if stale:
            print(f"stopped {len(stale)} Ray processes left behind by a killed driver of this study", file=sys.stderr)
    init_ray(address, compile_env)
    try:
        check_resources(study.spec)
    except ClusterError as err:
        raise StudyError(study.source, [str(err)]) from None

    tracker = StudyTracker(uri, study.spec.tracking.experiment or study.name, here)
    parent = _start_parent_run(study, tracker, resume_id=state.get("parent_run_id"))
    here.folder.mkdir(parents=True, exist_ok=True)
    if resume:
        tracker.replay()  # what an earlier driver could not write (the store was down)
        again, for_good = tracker.read_settled()
        if again:
            print(
                f"running again from their last checkpoints {len(again)} trials the machine failed (not their own "
                f"numbers or config): " + "; ".join(f"{n} ({r[:80]})" for n, r in sorted(again.items())),
                file=sys.stderr,
            )
        if for_good:
            print(
                f"not running again {len(for_good)} trials that failed the same way when run again (failed for "
                "good; both reasons are in their runs): "
                + "; ".join(f"{n} ({r[:80]})" for n, r in sorted(for_good.items())),
                file=sys.stderr,
            )
    state.update(
        parent_run_id=parent,
        tracking_uri=uri,
        study=study.raw,
        source=study.source,
        sets=sets or [],
        driver_pid=os.getpid(),
        ray_pids=ray_pids() if address is None else [],
    )
    here.state.write_text(dump_json(state))

    metric = study.spec.target.metric
    epochs = {name: unit[0].config.train.epochs for name, unit in study.units.items()}
    if study.spec.search.kind == "optuna":
        epochs["*"] = study.search_config(study.search_arm, study.spec.seeds[0], {}).train.epochs
    board = TrialBoard(study.name, epochs, metric)
    key = str(here.folder)
    SESSIONS[key] = DriverSession(study, tracker, board, metric)
    interrupted, previous = False, _stop_on_sigterm(SESSIONS[key])
    try:
        with board:
            for phase, space, kwargs in _phases(study):
                grid = _tuner(
                    study,
                    here,
                    phase,
                    space,
                    kwargs,
                    key,
                    frozenset(tracker.settled),
                ).fit()
                if grid.num_terminated + grid.num_errors < len(grid):  # Ctrl-C: Ray saved its state and returned
                    interrupted = True
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        terminated = SESSIONS.pop(key).terminated
        try:
            outcome = close_study(tracker, study, here.folder, interrupted or terminated)
        finally:
            shutdown_ray()  # now, not at the interpreter's exit: a second sooner, and the report runs without it
        outcome.terminated = terminated
    return outcome
