"""The Ray Tune trial function: a unit of K >= 1 trials (``mto.training.unit.run_unit``) with Ray's report
and checkpoints.

Runs in a Ray worker. It never touches MLflow: each epoch goes to ``tune.report`` and the driver's
callbacks log it. Every Ray trial is a unit, a lone trial a unit of one, so there is one report shape
(each member's metrics under ``MEMBERS``, failures under ``MEMBER_FAILURES``) and one checkpoint shape
(``{"members": {name: state}, "failed": {name: reason}}``). Affinity maps travel in the result as bytes,
for the driver to write and attach: no worker's disk is read.

So does each trial's encoder, once, at its last epoch (``tracking.encoder: last``): made here, where the model is,
as timm's files (``mto.save_encoder``: the backbone alone), and sent as their bytes. The alternative, the driver
reading the last checkpoint from Ray Tune's storage, would load torch in the driver and read 3 to 4 times the
bytes (the checkpoint holds the method's heads, momentum copies and the optimiser's state too).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.fs as pafs
import ray
from ray import tune

from ablations.contract import (
    AFFINITY_DATA,
    ENCODER_DATA,
    EPOCH,
    FINETUNE_CURVE,
    MEMBER_FAILURES,
    MEMBERS,
    NODE,
    OBJECTIVE,
    PHASE,
    RESTORE_NOTE,
    RESUMED_FROM,
    STEP_FALLBACKS,
    STEP_WAY,
)
from ablations.run.gpu_usage import GPUUsage
from ablations.study import Study, TrialSpec, with_threads
from mto import GPUOutOfMemoryError, TrialConfig

if TYPE_CHECKING:
    from mto import EpochReport
if ray.is_initialized():  # in a trial's process, where Ray unpickles the trial function: the trial loop (torch,
    from mto import run_unit  # noqa: F401 - timm) loads as its worker starts; the driver imports this module first

STATE_FILE = "state.pt"


def read_state(folder: str) -> dict[str, Any]:
    """A trial's checkpointed state. Tensors, numbers, strings and containers only (``weights_only``): a
    checkpoint folder someone else can write cannot run code in the trial."""
    import torch

    return torch.load(os.path.join(folder, STATE_FILE), map_location="cpu", weights_only=True)


def _restore() -> tuple[dict[str, Any] | None, str]:
    """The trial's newest readable checkpoint (Ray Tune's latest, else the one kept before it, else none:
    the trial starts over), and what was skipped to reach it ("" when nothing was)."""
    latest = tune.get_checkpoint()
    if latest is None:
        return None, ""
    fs, parent = latest.filesystem, os.path.dirname(latest.path.rstrip("/"))
    found = fs.get_file_info(pafs.FileSelector(parent))
    older = sorted(
        (
            i.path
            for i in found
            if i.type == pafs.FileType.Directory
            and os.path.basename(i.path).startswith("checkpoint_")
            and i.path < latest.path
        ),
        reverse=True,
    )
    skipped = []
    for path in [latest.path, *older]:
        try:
            with tune.Checkpoint(path, filesystem=fs).as_directory() as folder:
                return read_state(folder), "; ".join(skipped)
        except Exception as err:  # noqa: BLE001 - a truncated or missing file fails in torch, zipfile or pyarrow
            skipped.append(
                f"{os.path.basename(path)} unreadable ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
                if str(err)
                else f"{os.path.basename(path)} unreadable ({type(err).__name__})"
            )
    return None, "; ".join(skipped + ["started over"])


def _report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
    if state is None:
        tune.report(metrics)
        return
    import torch

    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, os.path.join(folder, STATE_FILE))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


EncoderFiles = Callable[["EpochReport"], dict[str, bytes]]  # a trial's report -> its encoder's files


def encoder_files(trial: TrialSpec, study: str) -> EncoderFiles:
    """The files of ``trial``'s encoder from a report's checkpoint, as bytes by file name."""

    def files(r: EpochReport) -> dict[str, bytes]:
        from mto import save_encoder

        with tempfile.TemporaryDirectory() as folder:
            save_encoder(trial.config, r.checkpoint, folder, study=study, trial=trial.name)
            return {p.name: p.read_bytes() for p in Path(folder).iterdir()}

    return files


class Payload:
    """One trial's per-epoch keys for the driver: metrics, the search objective carried forward between
    evaluations, its affinity maps (bytes), the epoch it resumed from, the node it runs on, how its steps run; at
    its last epoch, its encoder's files (bytes) when ``encoder`` makes them."""

    def __init__(self, metric: str, resume: dict[str, Any] | None, note: str = "", encoder: EncoderFiles | None = None):
        self.metric, self.resume, self.note, self.encoder = metric, resume, note, encoder
        measured = [h[metric] for h in (resume or {}).get("history", []) if metric in h]
        self.last = {OBJECTIVE: measured[-1]} if measured else {}  # carried forward from the latest measurement
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, r: EpochReport) -> dict[str, Any]:
        metrics: dict[str, Any] = {**r.metrics, EPOCH: r.epoch, NODE: self.node, STEP_WAY: r.step_way}
        if r.step_fallbacks:
            metrics[STEP_FALLBACKS] = list(r.step_fallbacks)
        if self.resume is not None:
            metrics[RESUMED_FROM] = int(self.resume["epoch"])
        if self.note:
            metrics[RESTORE_NOTE] = self.note
        if self.metric in r.metrics:
            self.last[OBJECTIVE] = r.metrics[self.metric]
        metrics.update(self.last)
        if r.phase != "train":
            metrics[PHASE] = r.phase
        if "finetune_loss" in r.arrays:  # a short list: it travels in the result, not through a disk
            metrics[FINETUNE_CURVE] = [float(v) for v in r.arrays["finetune_loss"]]
        if "affinity" in r.arrays:  # a few hundred kB, at eval.affinity_epochs only
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **r.arrays)
            metrics[AFFINITY_DATA] = buffer.getvalue()
        last = r.phase == "train" and r.epoch == r.epochs and r.checkpoint is not None  # it always has one
        if last and self.encoder is not None:  # 22 MB for ViT-Tiny, once per trial
            metrics[ENCODER_DATA] = self.encoder(r)
        return metrics


def out_of_memory(err: BaseException, config: TrialConfig, resources: Any) -> str:
    """The reason of a trial whose GPU ran out of memory, one line: torch's words and what to change."""
    said = str(err).strip().splitlines()[0][:200] if str(err).strip() else "out of memory"
    shared = (
        f"resources.gpu={resources.gpu:g} puts {int(1 / resources.gpu)} trials on each GPU"
        if 0 < resources.gpu < 1
        else f"resources.gpu={resources.gpu:g}"
    )
    fused = f", resources.fuse={resources.fuse} trains that many in one process" if resources.fuse > 1 else ""
    return (
        f"the GPU ran out of memory ({said}); lower train.batch_size (now {config.train.batch_size}), or put fewer "
        f"trials on each GPU ({shared}{fused}): raise resources.gpu or lower resources.fuse"
    )


def trial_function(
    params: dict[str, Any], *, study: Study, threads: int, settled: frozenset[str] = frozenset()
) -> None:
    """Run one Ray trial of ``study``: a unit of K >= 1 members (``Study.unit``; ``params`` is Ray's config, the
    unit's name or an Optuna sample) trained by ``mto.training.unit.run_unit``, reporting once per epoch for all
    members (``MEMBERS``, ``MEMBER_FAILURES``) and checkpointing them together.

    ``settled``: trials whose MLflow runs an earlier driver ended for good (FINISHED, or FAILED on their own).
    Ray Tune may still find them unfinished (a driver killed just after one ended) or errored (``--resume``
    retries errored trials, for those the machine failed); such a trial returns at once. Members that failed
    before a restart stay failed."""
    import torch

    from mto import run_unit

    unit = study.unit(params, tune.get_context().get_trial_id())
    if all(t.name in settled for t in unit):
        return
    state, note = _restore()
    state = state or {"members": {}, "failed": {}}
    failed: dict[str, str] = dict(state["failed"])
    live = [t for t in unit if t.name not in failed]
    restored = dict(failed)  # failed before a restart: said again, so the driver ends those runs as FAILED
    if not live:
        _report({EPOCH: 0, MEMBERS: {}, MEMBER_FAILURES: restored}, None)
        return
    resumes = [state["members"].get(t.name) for t in live]
    keep = study.spec.tracking.encoder == "last"
    payloads = [
        Payload(study.spec.search.metric, r, note, encoder_files(t, study.name) if keep else None)
        for t, r in zip(live, resumes)
    ]
    epoch = max([int(r["epoch"]) for r in resumes if r] + [0])
    errors: list[Exception] = []

    def report(reports: dict[int, EpochReport], failures: dict[int, Exception]) -> None:
        nonlocal epoch
        epoch = next(iter(reports.values())).epoch if reports else epoch + 1
        said = {live[i].name: f"{type(err).__name__}: {err}" for i, err in failures.items()}
        failed.update(said)
        errors.extend(failures.values())
        system = usage.take()  # the GPU's means since the last report, the same for every member of the unit
        members = {live[i].name: {**payloads[i](r), **system} for i, r in reports.items()}
        due = {live[i].name: r.checkpoint for i, r in reports.items() if r.checkpoint is not None}
        # a failure is checkpointed too, so that a restart never trains a failed member again
        checkpoint = {"members": due, "failed": dict(failed)} if due or failures else None
        result = {EPOCH: epoch, MEMBERS: members, MEMBER_FAILURES: {**restored, **said}}
        first = next(iter(members.values()), {})
        if OBJECTIVE in first:  # what Optuna and ASHA read (a search unit has one member)
            result[OBJECTIVE] = first[OBJECTIVE]
        _report(result, checkpoint)
        restored.clear()

    usage, oom = GPUUsage(), None
    try:
        results = run_unit([with_threads(t.config, threads) for t in live], report, resumes=resumes)
    except torch.OutOfMemoryError as err:
        oom = out_of_memory(err, live[0].config, study.spec.resources)
    finally:
        usage.stop()
    if oom is not None:  # the failed step's tensors went with its traceback: their memory goes back to the GPU, for
        torch.cuda.empty_cache()  # the trials that share it
        raise GPUOutOfMemoryError(oom)
    if errors and all(r is None for r in results):  # no member left: the Ray trial fails with the last error
        raise errors[-1]
