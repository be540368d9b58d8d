"""Settings that are valid one by one but cannot work together, refused before anything starts.

Each rule here would otherwise fail inside every trial, after Ray started and the MLflow runs
exist, or finish with nothing to compare: a batch larger than the training set, heads that do
not divide the width, ``train.device: cuda`` on trials given no GPU, non-finite numbers, seeds
a target metric no trial logs, a fine-tuning batch above the training set or
fine-tuning under ASHA, report epochs outside the training, a kNN k above the probe set, a heterogeneity
batch above the test set, synthetic images that do not fit in memory, an ASHA grace period beyond the
training, names too long for a run or a folder, a storage folder that cannot be made, a target metric
where lower is better or a search that goes the other way from its metric's declaration.
Nothing here imports torch, Ray or MLflow, and nothing is created.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

from ablations.study.messages import Problems, shorten
from ablations.study.schema import StudySpec
from mto import PRESETS, TrialConfig, declared, flatten, is_accuracy, registry, to_dict, validation_size, why_absent

STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")  # pyarrow's file systems

# Training / test images of each data set (digits: scikit-learn's 1,797 split 80/20, stratified).
# imagefolder is counted only by reading it, so its sizes are not checked here.
SPLIT_SIZES = {"digits": (1437, 360), "cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000)}
MAX_NAME = 128  # the study and experiment name: an MLflow run name and a folder name are built from it
MAX_ACCURACY_FRACTION = 2.0  # beyond it the target is above 100% for any reference that ends above 50%
MEMORY = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # this machine's, in bytes


def check_feasibility(spec: StudySpec, trials: list, problems: Problems) -> None:
    """Add a problem for every setting that cannot work, naming its field and what is allowed."""
    _study_level(spec, problems.add)
    for t in trials:
        _trial_level(spec, t, lambda path, msg, t=t: problems.add(path, msg, t.name))


def _study_level(spec: StudySpec, problem) -> None:
    for path, name in (("name", spec.name), ("tracking.experiment", spec.tracking.experiment)):
        if name is not None and len(name) > MAX_NAME:
            problem(path, f"{len(name)} characters: at most {MAX_NAME} (it names MLflow runs and folders)")
    numbers = {
        "resources.cpu": spec.resources.cpu,
        "resources.gpu": spec.resources.gpu,
        "target.fraction": spec.target.fraction,
    }
    for path, d in spec.search.space.items():
        for kind in ("loguniform", "uniform"):
            for v in getattr(d, kind) or ():
                numbers[f"search.space.{path}.{kind}"] = v
    for path, v in numbers.items():
        if not math.isfinite(v):
            problem(path, f"{v!r} is invalid: a finite number")
    fraction = spec.target.fraction
    if math.isfinite(fraction) and is_accuracy(spec.target.metric) and fraction > MAX_ACCURACY_FRACTION:
        problem(
            "target.fraction",
            f"{spec.target.fraction:g} is invalid for the accuracy {spec.target.metric}: "
            f"at most {MAX_ACCURACY_FRACTION:g} (the target, reference final x fraction, must stay below 100%)",
        )
    _directions(spec, problem)
    scheme = spec.storage.split("://", 1)[0] if spec.storage_uri else None
    if scheme is not None and scheme not in STORAGE_SCHEMES:
        problem("storage", f"{shorten(spec.storage)} is invalid: a folder, or a URI of {', '.join(STORAGE_SCHEMES)}")
    storage = _unusable_folder(spec.driver_storage)
    if storage:
        problem("storage", f"{shorten(spec.driver_storage)} cannot be used: {storage}")


def _directions(spec: StudySpec, problem) -> None:
    """The report measures how soon the target metric rises to a target, and an Optuna search goes the way its
    metric's declaration says is better."""
    target = declared(spec.target.metric)
    if target is not None and not target.higher_is_better:
        problem(
            "target.metric",
            f"{spec.target.metric} is invalid: lower is better for it, and the report counts the epochs until the "
            "target metric rises to its target; choose a metric where higher is better (an accuracy)",
        )
    searched = declared(spec.search.metric) if spec.search.kind == "optuna" else None
    if searched is None:
        return
    mode, better = ("max", "higher") if searched.higher_is_better else ("min", "lower")
    if spec.search.mode != mode:
        problem(
            "search.mode",
            f"{spec.search.mode} is invalid for {spec.search.metric}: {better} is better for it, so {mode}",
        )


def _trial_level(spec: StudySpec, t: Any, problem) -> None:
    c: TrialConfig = t.config

    def at(key: str) -> str:  # where the trial's value of ``key`` was set: its arm, the grid or base
        return _source_of(spec, t.arm, key)

    for key, v in flatten(to_dict(c)).items():
        if isinstance(v, float) and not math.isfinite(v):
            problem(at(key), f"{v!r} is invalid: a finite number")
    _data_sizes(c, at, problem)
    asha = spec.search.asha if spec.search.kind == "optuna" else None
    if asha and t.arm == spec.search_arm and asha.grace_period > c.train.epochs:
        problem(
            "search.asha.grace_period",
            f"{asha.grace_period} is above train.epochs={c.train.epochs} of the "
            f"searched arm {spec.search_arm}: ASHA's first cut must come within the training, at most {c.train.epochs}",
        )
    _, width, _, heads = PRESETS[c.model.preset]
    width, heads = c.model.embed_dim or width, c.model.num_heads or heads
    if width % heads:
        problem(
            at("model.num_heads" if c.model.num_heads else "model.embed_dim"),
            f"{heads} heads do not divide the width {width}: choose num_heads dividing embed_dim",
        )
    if c.mim.method in registry.owners("decoder_dim") and c.mim.decoder_dim % c.mim.decoder_heads:
        problem(
            at("mim.decoder_heads"),
            f"{c.mim.decoder_heads} heads do not divide mim.decoder_dim "
            f"{c.mim.decoder_dim}: choose decoder_heads dividing decoder_dim",
        )
    if spec.search.kind == "optuna" and spec.search.asha and c.eval.finetune.enabled:
        problem(
            at("eval.finetune.enabled"),
            "true with search.asha: ASHA stops a trial at its last epoch's report, "
            "before that epoch's fine-tuning; turn one of them off",
        )
    if c.train.device == "cuda" and spec.resources.gpu == 0:
        problem(
            at("train.device"),
            "cuda, but resources.gpu is 0 so trials see no GPU: set resources.gpu "
            "(1, or a fraction to share one) or train.device: auto",
        )
    for path, metric in (
        ("target.metric", spec.target.metric),
        *((("search.metric", spec.search.metric),) if spec.search.kind == "optuna" else ()),
    ):
        why = why_absent(c, metric)
        if why:
            problem(path, f"{shorten(metric, 80)} is never logged: {why}")
    for e in spec.report_epochs or ():
        if not 1 <= e <= c.train.epochs:
            problem("report_epochs", f"{e} is outside the training: epochs 1 to {c.train.epochs}")


def _data_sizes(c: TrialConfig, at, problem) -> None:
    """Batches, probes and the heterogeneity batch that need more images than the trial's data set holds, and
    synthetic images that do not fit in this machine's memory."""
    full, test = split_sizes(c)
    if full is not None:
        train, _, _ = trial_images(c)
        capped = c.data.max_train is not None and c.data.max_train < full
        images = (
            f"the {train:,} training images ({c.data.name}{', data.max_train' if capped else ''}, less the "
            f"validation split): at most {train}"
        )
        if c.train.batch_size > train:
            if capped and at("data.max_train") != "base.data.max_train":  # the arm cut the data set
                problem(
                    at("data.max_train"),
                    f"{c.data.max_train} training images are fewer than "
                    f"train.batch_size={c.train.batch_size}: keep at least a batch",
                )
            else:
                problem(at("train.batch_size"), f"{c.train.batch_size} is above {images}")
        if c.eval.finetune.enabled and c.eval.finetune.batch_size > train:
            problem(
                at("eval.finetune.batch_size"),
                f"{c.eval.finetune.batch_size} is above {images} (fine-tuning trains on them)",
            )
        probe = min(train, c.eval.max_probe_train or train)
        if c.eval.knn and c.eval.knn_k > probe:
            problem(
                at("eval.knn_k"),
                f"{c.eval.knn_k} is above the {probe:,} images the kNN probe votes among: at most {probe}",
            )
    if test is not None and c.eval.hetero_batch > test:
        problem(
            at("eval.hetero_batch"),
            f"{c.eval.hetero_batch} is above the {test:,} test images ({c.data.name}) "
            f"the heterogeneity batch is drawn from: at most {test}",
        )
    need = sum(c.data.synthetic_size) * 3 * c.data.image_size**2 if c.data.name == "synthetic" else 0  # uint8
    if need > MEMORY:
        problem(
            at("data.synthetic_size"),
            f"{c.data.synthetic_size} images of {c.data.image_size}px take "
            f"{need / 2**30:,.1f} GiB of memory; this machine has {MEMORY / 2**30:,.1f} GiB",
        )


def trial_images(c: TrialConfig) -> tuple[int, int, int] | None:
    """The (pre-training, validation, test) images of the trial (``data.max_train`` and the validation split
    carved from train applied), or None when only reading its data set tells (imagefolder)."""
    full, test = split_sizes(c)
    if full is None:
        return None
    val = validation_size(full, c.data.val_fraction)
    return min(full - val, c.data.max_train or full), val, test


def split_sizes(c: TrialConfig) -> tuple[int | None, int | None]:
    """(training, test) images of the trial's data set before any cut, or (None, None) when only reading
    it tells (imagefolder)."""
    if c.data.name == "synthetic":
        return c.data.synthetic_size[0], c.data.synthetic_size[1]
    return SPLIT_SIZES.get(c.data.name, (None, None))


def _source_of(spec: StudySpec, arm: str, key: str) -> str:
    variant = flatten(spec.variants.get(arm, {}))
    if key in variant:
        return f"variants.{arm}.{key}"
    if f"grid.{key}" in variant:
        return f"variants.{arm}.grid.{key}"
    return f"grid.{key}" if key in spec.grid else f"base.{key}"


def _unusable_folder(path: str) -> str | None:
    """Why a folder could not be created or written at ``path`` (None when it can); creates nothing."""
    try:
        p = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as err:
        return str(err)[:200]
    if any(len(part.encode()) > 255 for part in p.parts):
        return "a path component is longer than 255 bytes"
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return f"{shorten(str(probe), 120)} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{shorten(str(probe), 120)} is not writable"
    try:  # os.access says yes to root everywhere; a temporary file (removed at once) tells
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as err:
        return f"{shorten(str(probe), 120)} is not writable ({err.strerror})"
    return None
