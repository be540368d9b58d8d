"""The Ray Tune trial function: ``mto.run_trial`` with Ray's report and checkpoints.

Runs in a Ray worker. It never touches MLflow: each epoch goes to ``tune.report`` and the
driver's callbacks log it. Affinity maps are written into the trial's folder and their path is
reported, for the driver to attach as an artifact.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any

import numpy as np
import torch
from ray import tune

from ablations.contract import AFFINITY_FILE, EPOCH, OBJECTIVE, RESUMED_FROM
from ablations.study import Study
from mto.trial import EpochReport, run_trial

STATE_FILE = "state.pt"


def trial_function(params: dict[str, Any], *, study: Study, threads: int) -> None:
    """Run one trial of ``study``; ``params`` is Ray's config (the trial name, or an Optuna sample)."""
    config = study.resolve(params).config
    if config.train.num_threads is None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, num_threads=threads))
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = torch.load(os.path.join(folder, STATE_FILE), map_location="cpu", weights_only=False)
    metric = study.spec.search.metric
    last: dict[str, float] = {}
    for h in (resume or {}).get("history", []):
        if metric in h:
            last[OBJECTIVE] = h[metric]
    trial_dir = tune.get_context().get_trial_dir()

    def report(r: EpochReport) -> None:
        metrics: dict[str, Any] = {**r.metrics, EPOCH: r.epoch}
        if resume is not None:
            metrics[RESUMED_FROM] = int(resume["epoch"])
        if metric in r.metrics:
            last[OBJECTIVE] = r.metrics[metric]
        metrics.update(last)
        if "affinity" in r.arrays:
            path = os.path.join(trial_dir, f"affinity_e{r.epoch:04d}.npz")
            np.savez_compressed(path, **r.arrays)
            metrics[AFFINITY_FILE] = path
        if r.checkpoint is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save(r.checkpoint, os.path.join(folder, STATE_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    run_trial(config, report, resume=resume)

