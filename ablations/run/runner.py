"""Running a study on Ray Tune: one invocation = one MLflow parent run and one folder, laid out by
``ablations.run.layout`` (its state, the journal of kept MLflow writes, Ray Tune's experiments ``arms`` and
``search``).

Ray's experiment state (with each trial's last two checkpoints) is what ``--resume`` restores:
finished trials and trials that failed on their own (a NaN loss) are not run again; unfinished ones,
and those the machine failed (a full disk, a killed worker), restart from their last readable
checkpoint; the driver reopens the same MLflow runs, skipping epochs it already logged. SIGTERM
stops a study as Ctrl-C does (``ablations.run.sigterm``). Which invocation runs: ``invocations``; Ray Tune's
experiments: ``phases`` and ``tuner``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from ablations.contract import (
    ETA,
    REFERENCE_ARM,
    REPORT_EPOCHS,
    RESOLVED_TRIALS,
    STUDY_FILE,
    TARGET_FRACTION,
    TARGET_METRIC,
    resolve_tracking_uri,
)
from ablations.run.callbacks import SESSIONS, DriverSession
from ablations.run.cleanup import ray_pids, stop_stale_ray
from ablations.run.cluster import (
    ClusterError,
    check_address,
    check_resources,
    cluster_nodes,
    compile_cache,
    init_ray,
    local_node,
    ray_environment,
    shutdown_ray,
)
from ablations.run.estimate import cost
from ablations.run.files import dump_json
from ablations.run.hold import StudyHeld, StudyHold
from ablations.run.invocations import interrupted_state, pick_invocation, study_layout
from ablations.run.layout import Invocation, StudyLayout
from ablations.run.outcome import StudyOutcome, close_study
from ablations.run.phases import phases
from ablations.run.progress import TrialBoard
from ablations.run.sigterm import stop_on_sigterm
from ablations.run.storage import StorageError, check_storage
from ablations.run.store import StoreDown, check_tracking, prepare_store
from ablations.run.tracking import StudyTracker
from ablations.run.tuner import make_tuner
from ablations.study import Study, StudyError
from mto import to_dict


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

    Everything this machine can refuse is refused before any MLflow store, run or invocation folder exists, and a
    refusal leaves nothing (the hold's lock file included) and no Ray process behind.

    Raises:
        StudyError: the study cannot start here (another driver holds it, nothing to resume, changed study, a
            cluster address where no Ray answers, resources no node has, a storage URI that does not answer).
        TrackingError: the tracking store is unusable (checked before Ray starts); ``StoreDown`` on ``--resume``
            when it takes none of the writes an earlier driver kept (they stay kept, and nothing has run).
    """
    layout = study_layout(study)
    here = pick_invocation(layout, study, resume)
    state = interrupted_state(study, here) if resume else {}
    uri = resolve_tracking_uri(tracking_uri or state.get("tracking_uri") or study.spec.tracking.uri)
    hold = StudyHold(layout.lock, study.name)
    try:
        hold.take()  # before the store, cluster, storage and resource checks: a held study is refused as such
    except StudyHeld as err:
        raise StudyError(study.source, [str(err)]) from None
    try:
        _start_ray(study, uri, address, layout)
    except BaseException:  # refused, or Ray could not start: nothing is left, the hold's file included
        shutdown_ray()
        hold.release(leave_nothing=True)
        raise
    if hold.taken_over:
        print(
            f"took over study {study.name} from {hold.taken_over}: that driver ended without letting it go "
            "(killed, or its machine lost)",
            file=sys.stderr,
        )
    try:
        return _run_held(study, resume, address, sets, here, state, uri)
    finally:
        hold.release()


def _start_ray(study: Study, uri: str, address: str | None, layout: StudyLayout) -> None:
    """Check what can be refused before Ray starts, then start or join Ray (and check the cluster joined).

    Raises StudyError or TrackingError, each naming what is refused."""
    spec = study.spec
    check_tracking(uri)
    try:
        if address:
            check_address(address)
        if spec.storage_uri:
            check_storage(spec.storage)
        if address is None:
            check_resources(spec, [local_node()])  # the node ray.init() would start, counted before it starts
    except (ClusterError, StorageError) as err:
        raise StudyError(study.source, [str(err)]) from None
    ray_environment()
    compile_env = compile_cache(layout.compile_cache)
    if address is None:
        stale = stop_stale_ray(layout.latest())
        if stale:
            print(f"stopped {len(stale)} Ray processes left behind by a killed driver of this study", file=sys.stderr)
    init_ray(address, compile_env)
    if address:
        try:
            check_resources(spec, cluster_nodes())
        except ClusterError as err:
            raise StudyError(study.source, [str(err)]) from None


def _run_held(
    study: Study,
    resume: bool,
    address: str | None,
    sets: list[str] | None,
    here: Invocation,
    state: dict,
    uri: str,
) -> StudyOutcome:
    prepare_store(uri)  # a new SQLite store's tables, made by one driver at a time
    tracker = StudyTracker(uri, study.spec.tracking.experiment or study.name, here)
    parent = _start_parent_run(study, tracker, resume_id=state.get("parent_run_id"))
    here.folder.mkdir(parents=True, exist_ok=True)
    if resume:
        try:
            tracker.replay()  # what an earlier driver could not write (the store was down)
        except StoreDown:
            shutdown_ray()  # they stay kept; nothing has run
            raise
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
    for line in cost(study, measure_missing=False, cluster=address is not None):  # the first lines of a run
        print(line, file=sys.stderr)

    metric = study.spec.target.metric
    epochs = {name: unit[0].config.train.epochs for name, unit in study.units.items()}
    if study.spec.search.kind == "optuna":
        epochs["*"] = study.search_config(study.search_arm, study.spec.seeds[0], {}).train.epochs
    board = TrialBoard(study.name, epochs, metric, samples=study.search_samples)
    key = str(here.folder)
    SESSIONS[key] = DriverSession(study, tracker, board, metric)
    interrupted, previous = False, stop_on_sigterm(SESSIONS[key])
    try:
        with board:
            for phase, space, kwargs in phases(study):
                grid = make_tuner(study, here, phase, space, kwargs, key, frozenset(tracker.settled)).fit()
                if grid.num_terminated + grid.num_errors < len(grid):  # Ctrl-C: Ray saved its state and returned
                    interrupted = True
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        terminated = SESSIONS.pop(key).terminated
        stopped = "interrupted" if interrupted or terminated else "ended"
        try:
            tracker.set_study_tag(ETA, f"{stopped} {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
            outcome = close_study(tracker, study, here.folder, interrupted or terminated)
        finally:
            shutdown_ray()  # now, not at the interpreter's exit: a second sooner, and the report runs without it
        outcome.terminated = terminated
    return outcome
