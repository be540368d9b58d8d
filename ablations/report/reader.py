"""A study's runs read back from MLflow (through its client), once: the ``StudyRecord`` every report is computed from.

Only what the driver logged is used: tags (arm, seed, grid point, paired reference trial, status, failure
reason), the ``train.epochs`` and ``data.name`` params, metric histories (the target metric and its validation
twin; fine-tuned top-1 and the probes when the study fine-tuned; heterogeneity per layer of the first seeds of
each arm and grid point) and the latest affinity maps of each arm and grid point's first seed.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from ablations.contract import (
    AFFINITY_FOLDER,
    ARM,
    DATA_PARAM,
    DEFAULT_TARGET_METRIC,
    ENCODER_TAG,
    EPOCHS_PARAM,
    FAILURE,
    FINETUNE_TOP1,
    GRID_PREFIX,
    HETERO_PREFIX,
    PROBE_METRICS,
    REFERENCE_ARM,
    REFERENCE_OF_TRIAL,
    REFERENCE_TRIAL,
    REPORT_EPOCHS,
    RESOLVED_TRIALS,
    ROLE,
    SEED,
    STEP_FALLBACK_TAG,
    STUDY,
    TARGET_FRACTION,
    TARGET_METRIC,
    TRIAL,
    validation_twin,
)
from ablations.report import sqlstore
from ablations.report.formulas import Curve, as_curve
from ablations.report.record import HETERO_SEEDS, Affinity, ReportError, StudyRecord, TrialRecord
from ablations.report.sqlstore import RunRow


def find_parent(client: MlflowClient, *, run_id: str | None = None, experiment: str | None = None) -> Run:
    """The study's parent run: by id, or the latest one of the experiment."""
    if run_id:
        try:
            run = client.get_run(run_id)
        except Exception as err:  # noqa: BLE001 - MLflow raises its own exception types per store
            raise ReportError(f"no run {run_id!r} in {client.tracking_uri}") from err
        if run.data.tags.get(ROLE) != "study":
            raise ReportError(f"run {run_id} is not a study's parent run (tag {ROLE} is not 'study')")
        return run
    exp = client.get_experiment_by_name(experiment or "")
    if exp is None:
        known = [e.name for e in client.search_experiments()]
        raise ReportError(
            f"no experiment {experiment!r} in {client.tracking_uri}; experiments: {', '.join(known) or 'none'}"
        )
    runs = client.search_runs(
        [exp.experiment_id], f"tags.`{ROLE}` = 'study'", order_by=["attributes.start_time DESC"], max_results=1
    )
    if not runs:
        raise ReportError(f"experiment {experiment!r} has no study runs (tag {ROLE} = 'study')")
    return runs[0]


def read_study_record(
    uri: str,
    *,
    run_id: str | None = None,
    experiment: str | None = None,
    metric: str | None = None,
    fraction: float | None = None,
    threads: int = 8,
) -> StudyRecord:
    """Read a study invocation's trials and their target-metric histories."""
    client = MlflowClient(uri)
    parent = find_parent(client, run_id=run_id, experiment=experiment)
    tags = parent.data.tags
    record = StudyRecord(
        uri,
        tags.get(STUDY, ""),
        parent.info.run_id,
        parent.info.run_name or "",
        metric or tags.get(TARGET_METRIC, DEFAULT_TARGET_METRIC),
        fraction if fraction is not None else float(tags.get(TARGET_FRACTION, 1.0)),
        tags.get(REFERENCE_ARM, ""),
        [int(e) for e in tags[REPORT_EPOCHS].split(",")] if tags.get(REPORT_EPOCHS) else None,
    )
    children = trial_runs(client, parent)
    if not children:
        raise ReportError(f"study run {parent.info.run_id} has no trial runs yet")
    ids = [r.run_id for r in children]
    by_run = histories(client, ids, record.metric, threads)
    selection = validation_twin(record.metric)  # every choice of a best row reads validation
    val_by_run = histories(client, ids, selection, threads) if selection else {}
    for run in children:
        t = run.tags
        record.trials.append(
            TrialRecord(
                run.run_id,
                t.get(TRIAL, run.name),
                t.get(ARM, "?"),
                int(t.get(SEED, 0)),
                {k[len(GRID_PREFIX) :]: v for k, v in t.items() if k.startswith(GRID_PREFIX)},
                t.get(REFERENCE_TRIAL, ""),
                t.get(REFERENCE_OF_TRIAL, ""),
                run.status,
                t.get(FAILURE, ""),
                int(run.params.get(EPOCHS_PARAM, 0)),
                by_run.get(run.run_id),
                val_by_run.get(run.run_id),
                run.metric_keys,
                run.params.get(DATA_PARAM, ""),
                t.get(STEP_FALLBACK_TAG, ""),
            )
        )
    _read_encoders(record, children)
    if not any(t.curve is not None for t in record.trials):
        raise ReportError(f"no trial of study run {parent.info.run_id} has the metric {record.metric!r}")
    if record.reference_arm and not any(t.arm == record.reference_arm and t.complete for t in record.trials):
        raise ReportError(f"the reference arm {record.reference_arm!r} has no complete trial to compare with")
    record.order = _study_order(client, parent.info.run_id) or sorted(t.name for t in record.trials)
    _read_figures_and_probes(client, record, threads)
    return record


def _read_figures_and_probes(client: MlflowClient, record: StudyRecord, threads: int) -> None:
    """The histories beside the target metric and the affinity maps, of the trials that can show them."""
    complete = record.complete_in_order()
    ids, logged = [t.run_id for t in complete], {k for t in complete for k in t.metric_keys}
    if FINETUNE_TOP1 in logged:  # a study that fine-tuned: fine-tuned top-1 and the probes beside it
        for metric in (FINETUNE_TOP1, *(p for p in PROBE_METRICS if p in logged)):
            record.curves[metric] = histories(client, ids, metric, threads)
    first = record.first_seeds(HETERO_SEEDS)
    keys = sorted({k for t in first for k in t.metric_keys if k.startswith(HETERO_PREFIX)})
    for key in keys:
        record.curves[key] = histories(client, [t.run_id for t in first], key, threads)
    for t in record.first_seeds(1):
        try:
            listed = client.list_artifacts(t.run_id, AFFINITY_FOLDER)
        except MlflowException as err:  # e.g. a server's store read as a file: its artifacts need the server
            record.unread = f"the affinity maps could not be read ({str(err).splitlines()[0][:200]})"
            return
        files = sorted(f.path for f in listed if f.path.endswith(".npz"))
        if files:
            with np.load(client.download_artifacts(t.run_id, files[-1])) as z:
                epoch = int(Path(files[-1]).stem.rsplit("_e", 1)[-1])
                record.affinity[t.run_id] = Affinity(z["affinity"], int(z["num_masked"]), epoch)


def _read_encoders(record: StudyRecord, children: list[RunRow]) -> None:
    """Each trial's logged encoder: the artifact path its run's tag names, once the driver attached it."""
    paths = {run.run_id: run.tags.get(ENCODER_TAG, "") for run in children}
    for t in record.trials:
        t.encoder = paths.get(t.run_id, "")


PARAMS = (EPOCHS_PARAM, DATA_PARAM)  # the config values the report reads back


def trial_runs(client: MlflowClient, parent: Run) -> list[RunRow]:
    """The parent's child runs (active ones, in ``search_runs``' order): one query per table over
    a SQLite store (``sqlstore``), else ``search_runs``."""
    exp, parent_id = parent.info.experiment_id, parent.info.run_id
    store = sqlstore.sql_store(client)
    if store is not None:
        return sqlstore.child_runs(store, exp, parent_id, PARAMS)
    return [
        RunRow(
            r.info.run_id,
            r.info.run_name or "",
            r.info.status,
            r.data.tags,
            {k: v for k, v in r.data.params.items() if k in PARAMS},
            sorted(r.data.metrics),
        )
        for r in client.search_runs([exp], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}'", max_results=50_000)
    ]


def histories(client: MlflowClient, run_ids: list[str], metric: str, threads: int = 8) -> dict[str, Curve]:
    """One metric's (epochs, values) for many runs, in the order of ``run_ids`` (never the store's, which
    follows the random run ids: a bootstrap over runs must not depend on it); runs that never logged it are absent.

    Over a SQLite store, one query per 500 runs (``sqlstore.metric_points``); over another SQL
    database, the store's bulk query; otherwise (a server) ``get_metric_history`` per run, in a
    thread pool. All return the same points (tests check it).
    """
    store = sqlstore.sql_store(client)
    bulk = getattr(getattr(getattr(client, "_tracking_client", None), "store", None), "get_metric_history_bulk", None)
    if store is not None:
        points = sqlstore.metric_points(store, run_ids, metric)
    elif bulk is not None:  # another SQL database: MLflow's own bulk query
        points = {}
        for i in range(0, len(run_ids), 500):
            for m in bulk(run_ids[i : i + 500], metric, max_results=10**9):
                points.setdefault(m.run_id, []).append((m.step, m.value))
    else:
        with ThreadPoolExecutor(threads) as pool:
            hists = pool.map(lambda r: client.get_metric_history(r, metric), run_ids)
            points = {run_id: [(m.step, m.value) for m in hist] for run_id, hist in zip(run_ids, hists) if hist}
    return {run_id: _curve(points[run_id]) for run_id in run_ids if run_id in points}  # in the order asked for


def _curve(points: list[tuple[int, float]]) -> Curve:
    by_step = dict(points)  # a re-logged step keeps its last value
    steps = sorted(by_step)
    return as_curve(steps, [by_step[s] for s in steps])


def _study_order(client: MlflowClient, parent_id: str) -> list[str]:
    """Trial names in the order of the study file (from the parent's resolved_trials.json)."""
    try:
        folder = client.download_artifacts(parent_id, RESOLVED_TRIALS)
        return list(json.loads(Path(folder).read_text()))
    except Exception:  # noqa: BLE001 - an older or hand-made parent: fall back to name order
        return []
