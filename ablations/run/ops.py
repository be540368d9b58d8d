"""The trial writes the tracker makes in MLflow, one op each: a JSON-able dict naming its trial, so that a write
is kept as it is until the store has taken it (``ablations.run.journal``).

Ops: ``create`` (the run, its tags and params), ``reopen`` (a resumed trial), ``epoch`` (one epoch's metrics),
``artifact`` (a file the driver wrote), ``encoder`` (a folder the driver wrote: the trial's encoder),
``finetune_curve``, ``tag`` and ``end``. The journal makes them in groups: one op, or a run of one trial's epoch
ops, logged as one batch.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from ablations.contract import AFFINITY_FOLDER, ENCODER_FOLDER, ENCODER_TAG, FAILED_BEFORE, FAILURE, FINETUNE_FOLDER
from ablations.run.journal import BATCH, Op


def make(
    client: MlflowClient, experiment_id: str, runs: dict[str, str], settled: Collection[str], group: list[Op]
) -> None:
    """Make a group of ops in the store (``ablations.run.journal.groups``: one op, or epoch ops of one trial, logged
    as one batch), idempotently (a run is created once; an epoch logged again is the same rows).

    ``runs`` maps trial names to their run ids (a created run is added); ``settled``: the trials an earlier
    driver ended for good, whose runs stay as they are."""
    if len(group) > 1 or group[0]["op"] == "epoch":
        batch = [Metric(k, v, op["time"], op["epoch"]) for op in group for k, v in op["metrics"].items()]
        for i in range(0, len(batch), BATCH):
            client.log_batch(runs[group[0]["trial"]], metrics=batch[i : i + BATCH])
        return
    op = group[0]
    name, kind = op["trial"], op["op"]
    if kind == "create":
        if name not in runs:
            run_id = client.create_run(experiment_id, run_name=name, tags=op["tags"]).info.run_id
            params = [Param(k, v[:6000]) for k, v in op["params"].items()]
            for i in range(0, len(params), 100):
                client.log_batch(run_id, params=params[i : i + 100])
            runs[name] = run_id
        return
    run_id = runs[name]
    if kind == "reopen":
        run = client.get_run(run_id)
        if run.info.status == "FAILED" and name not in settled:  # runs again: the old reason is history
            client.set_tag(run_id, FAILED_BEFORE, run.data.tags.get(FAILURE, "")[:5000])
            client.delete_tag(run_id, FAILURE)
        if run.info.status != "FINISHED" and name not in settled:
            client.update_run(run_id, status="RUNNING")
    elif kind == "artifact":
        if os.path.isfile(op["path"]):
            client.log_artifact(run_id, op["path"], AFFINITY_FOLDER)
    elif kind == "encoder":
        if os.path.isdir(op["path"]):  # else attached already: this op was made before the journal noted it
            client.log_artifacts(run_id, op["path"], ENCODER_FOLDER)
            client.set_tag(run_id, ENCODER_TAG, ENCODER_FOLDER)  # after the files: the tag says they are all there
            shutil.rmtree(op["path"])  # the driver's copy: the store has it now
    elif kind == "finetune_curve":
        client.log_dict(
            run_id, {"epoch": op["epoch"], "loss": op["loss"]}, f"{FINETUNE_FOLDER}/loss_e{op['epoch']:04d}.json"
        )
    elif kind == "tag":
        client.set_tag(run_id, op["key"], op["value"])
    elif kind == "end":
        if op["status"] != "FINISHED" and client.get_run(run_id).info.status == "FINISHED":
            return  # a finished trial stays finished, whatever happens to its Ray trial later
        if op["reason"]:
            client.log_batch(run_id, tags=[RunTag(FAILURE, op["reason"][:5000])])
        client.set_terminated(run_id, op["status"])
