"""A study's runs read back from MLflow (``source``: the store, read in bulk): the ``StudyRecord`` every report is
computed from. Only what the driver logged and the report shows is read, in two steps:

- ``read_study_record``: the parent run's tags; every trial run's tags, status, ``train.epochs`` and ``data.name``
  params and each metric's latest value and step (the summary metrics a report wrote before among them), listed
  once; then the histories of the trials listed as finished: the target metric and its validation twin,
  fine-tuned top-1 and the probes when the study fine-tuned.
- ``read_drawn``: once the tables are computed, for the trials the figures draw alone (``compute.drawn``):
  heterogeneity per layer and each one's latest affinity maps (``read_affinity``).

A study still running is read as a snapshot taken when its trial runs are listed: a trial listed as running stays
running in the report (the step of its latest ``trial/epoch`` says how far it was), and only the trials listed as
finished, which the driver never writes again, have their histories and artifacts read.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

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
    SUMMARY_PREFIX,
    TARGET_FRACTION,
    TARGET_METRIC,
    TRIAL,
    validation_twin,
)
from ablations.report.record import Affinity, ReportError, StudyRecord, TrialRecord
from ablations.report.source import Source

PARAMS = (EPOCHS_PARAM, DATA_PARAM)  # the config values the report reads back


def find_parent(source: Source, *, run_id: str | None = None, experiment: str | None = None) -> Run:
    """The study's parent run: by id, or the latest one of the experiment."""
    client = source.client
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
    source: Source | str,
    *,
    run_id: str | None = None,
    experiment: str | None = None,
    metric: str | None = None,
    fraction: float | None = None,
) -> StudyRecord:
    """Read a study invocation's trials, the target metric's histories and those beside it (not the figures')."""
    source = source if isinstance(source, Source) else Source(source)
    parent = find_parent(source, run_id=run_id, experiment=experiment)
    tags = parent.data.tags
    record = StudyRecord(
        source.uri,
        tags.get(STUDY, ""),
        parent.info.run_id,
        parent.info.run_name or "",
        metric or tags.get(TARGET_METRIC, DEFAULT_TARGET_METRIC),
        fraction if fraction is not None else float(tags.get(TARGET_FRACTION, 1.0)),
        tags.get(REFERENCE_ARM, ""),
        [int(e) for e in tags[REPORT_EPOCHS].split(",")] if tags.get(REPORT_EPOCHS) else None,
    )
    children = source.child_runs(parent, PARAMS)
    record.read_at = time.strftime("%Y-%m-%d %H:%M:%S")
    if not children:
        raise ReportError(f"study run {parent.info.run_id} has no trial runs yet")
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
                steps={k: step for k, (step, _) in run.latest.items()},
                data=run.params.get(DATA_PARAM, ""),
                step_fallback=t.get(STEP_FALLBACK_TAG, ""),
                encoder=t.get(ENCODER_TAG, ""),
                written={k: v for k, (_, v) in run.latest.items() if k.startswith(SUMMARY_PREFIX)},
            )
        )
    finished = [t for t in record.trials if t.status == "FINISHED"]  # never written again by the driver
    curves = histories(source, finished, record.metric)
    selection = validation_twin(record.metric)  # every choice of a best row reads validation
    val_curves = histories(source, finished, selection) if selection else {}
    for t in finished:
        t.curve, t.val_curve = curves.get(t.run_id), val_curves.get(t.run_id)
    if finished and not curves:
        raise ReportError(f"no finished trial of study run {parent.info.run_id} has the metric {record.metric!r}")
    if record.reference_arm and not any(t.arm == record.reference_arm and t.complete for t in record.trials):
        running = sum(t.arm == record.reference_arm and t.running for t in record.trials)
        raise ReportError(
            f"the reference arm {record.reference_arm!r} has no complete trial to compare with"
            + (f" ({running} of its trials still running)" if running else "")
        )
    record.order = _study_order(source, parent.info.run_id) or sorted(t.name for t in record.trials)
    complete = record.complete_in_order()
    logged = {k for t in complete for k in t.steps}
    if FINETUNE_TOP1 in logged:  # a study that fine-tuned: fine-tuned top-1 and the probes beside it
        for key in (FINETUNE_TOP1, *(p for p in PROBE_METRICS if p in logged)):
            record.curves[key] = histories(source, complete, key)
    return record


def read_drawn(source: Source, record: StudyRecord, hetero: list[TrialRecord], affinity: list[TrialRecord]) -> None:
    """What the figures draw, of the trials they draw alone, all read at once: heterogeneity per layer of
    ``hetero``, the latest affinity maps of ``affinity``."""
    keys = sorted({k for t in hetero for k in t.steps if k.startswith(HETERO_PREFIX)})
    with ThreadPoolExecutor(source.threads) as pool:
        curves = [pool.submit(histories, source, hetero, key) for key in keys]
        maps = [pool.submit(read_affinity, source, t.run_id) for t in affinity]
        record.curves.update({key: c.result() for key, c in zip(keys, curves)})
        try:
            record.affinity.update({t.run_id: m.result() for t, m in zip(affinity, maps) if m.result() is not None})
        except MlflowException as err:  # e.g. a server's store read as a file: its artifacts need the server
            record.unread = f"the affinity maps could not be read ({str(err).splitlines()[0][:200]})"


def read_affinity(source: Source, run_id: str) -> Affinity | None:
    """A trial's latest affinity maps (``affinity/affinity_eNNNN.npz``), or None when it logged none."""
    path = source.latest_file(run_id, AFFINITY_FOLDER, ".npz")
    if path is None:
        return None
    with np.load(source.download(run_id, path)) as z:
        return Affinity(z["affinity"], int(z["num_masked"]), int(path.rsplit("_e", 1)[-1].split(".")[0]))


def histories(source: Source, trials: list[TrialRecord], metric: str) -> dict:
    """``metric``'s curve of each of ``trials`` that logged it (run id -> curve), in the order of ``trials``."""
    return source.histories({t.run_id: t.steps[metric] for t in trials if metric in t.steps}, metric)


def _study_order(source: Source, parent_id: str) -> list[str]:
    """Trial names in the order of the study file (from the parent's resolved_trials.json)."""
    try:
        return list(json.loads(source.download(parent_id, RESOLVED_TRIALS).read_text()))
    except Exception:  # noqa: BLE001 - an older or hand-made parent: fall back to name order
        return []
