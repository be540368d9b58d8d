"""What a study costs before it runs: its work (trials, epochs, images through the model) and, from the pace of
each model shape measured on a machine (``mto.training.pace``), the wall time of its trials.

A trial's seconds are its pace times its work: the model built and the data moved (once), the first steps'
compiling and capture (once), every optimisation step, every evaluation per image it reads, every heterogeneity
profile and every fine-tuning epoch per image. The study's wall time is that of its Ray trials scheduled the
longest first on as many slots as run at once (``max_concurrent``, and the CPUs and GPUs each trial asks for):
the makespan of a greedy list schedule. A fused unit is counted as its members one after another (an upper
bound: fusing is for GPUs, where it is faster). Pure functions; nothing here runs or imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from ablations.study.expansion import Study, TrialSpec, with_threads
from ablations.study.feasibility import trial_images
from mto import TrialConfig, to_dict

# The settings a pace depends on, as dot paths (a section: all of it): two trials that agree on these run at the
# same pace per step, per image read and per profile. Epochs, seeds, learning rates and the lambdas' values
# change how much work there is or its numbers, not its pace; which MTO losses are on does change it.
PACE_SETTINGS = (
    "data.name",
    "data.image_size",
    "model",
    "mim",
    "mto.recalibration",
    "mto.layers_spa",
    "mto.layers_e",
    "mto.layers_r",
    "train.batch_size",
    "train.device",
    "train.precision",
    "train.num_threads",
    "train.compile",
    "train.cuda_graphs",
    "eval.linear",
    "eval.knn",
    "eval.knn_k",
    "eval.probe_steps",
    "eval.hetero_batch",
    "eval.finetune",
)
PACE_KEYS = ("start_s", "settling_s", "step_s", "eval_s_per_image", "profile_s", "finetune_s_per_image")


@dataclass(frozen=True)
class TrialWork:
    """The work of one trial: pre-training epochs and the images its steps read, its evaluations (epoch 0,
    every ``eval.every`` epochs and the last) and the images each reads, its heterogeneity profiles (epoch 0 and
    every epoch), and its fine-tuning epochs and the images each reads."""

    name: str
    shape: str
    epochs: int
    steps: int
    train_images: int
    evaluations: int
    eval_images: int
    profiles: int
    finetune_epochs: int
    finetune_images: int


def shape(cfg: TrialConfig) -> str:
    """The key of a trial's pace (``PACE_SETTINGS``): 12 hex digits, the same for trials that run at one pace."""
    flat, picked = to_dict(cfg), {}
    for path in PACE_SETTINGS:
        node = flat
        for part in path.split("."):
            node = node[part]
        picked[path] = node
    mto = cfg.mto
    picked["mto.losses"] = [mto.lambda_spa > 0, mto.lambda_e > 0, mto.lambda_r > 0]
    return hashlib.sha1(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:12]


def trial_work(t: TrialSpec, threads: int) -> TrialWork | None:
    """The work of ``t`` run with ``threads`` CPU threads unless it sets its own (``Study.threads``); None where
    its data set's size is known only by reading it (an image folder)."""
    c, sizes = with_threads(t.config, threads), trial_images(t.config)
    if sizes is None:
        return None
    train, val, test = sizes
    epochs, batch = c.train.epochs, c.train.batch_size
    steps = epochs * (train // batch)
    evaluated = {0, epochs} | {e for e in range(1, epochs + 1) if e % c.eval.every == 0}
    probes = c.eval.linear or c.eval.knn
    read = min(train, c.eval.max_probe_train or train) + test + val
    ft = c.eval.finetune
    tunings = len(ft.epochs_for(epochs)) if ft.enabled else 0
    return TrialWork(
        t.name,
        shape(c),
        epochs,
        steps,
        steps * batch,
        len(evaluated) if probes else 0,
        read if probes else 0,
        epochs + 1,
        tunings * ft.epochs,
        (train // ft.batch_size) * ft.batch_size if ft.enabled else 0,
    )


def trial_seconds(w: TrialWork, pace: dict[str, float]) -> float:
    """Seconds of ``w`` at ``pace`` (``mto.training.pace.measure_pace``'s keys, ``PACE_KEYS``)."""
    return (
        pace["start_s"]
        + pace["settling_s"]
        + w.steps * pace["step_s"]
        + w.evaluations * w.eval_images * pace["eval_s_per_image"]
        + w.profiles * pace["profile_s"]
        + w.finetune_epochs * w.finetune_images * pace["finetune_s_per_image"]
    )


def makespan(durations: list[float], slots: int) -> float:
    """The wall time of ``durations`` run ``slots`` at a time, each started on the first slot free, longest
    first."""
    ends = [0.0] * max(1, slots)
    for d in sorted(durations, reverse=True):
        ends[ends.index(min(ends))] += d
    return max(ends)


def slots(study: Study, cpus: float, gpus: float) -> int:
    """How many Ray trials of ``study`` run at once on a machine (or cluster) of ``cpus`` CPUs and ``gpus`` GPUs."""
    r = study.spec.resources
    most = [len(study.units), math.floor(cpus / r.cpu)]
    if r.gpu > 0:
        most.append(math.floor(gpus / r.gpu))
    if study.spec.max_concurrent:
        most.append(study.spec.max_concurrent)
    return max(1, min(most))


@dataclass(frozen=True)
class StudyWork:
    """The work of a study: its trials whose size is known, the names of the others, and its Optuna samples."""

    trials: list[TrialWork]
    unknown: list[str]  # trials whose data set is an image folder: its size is known only by reading it
    samples: list[TrialWork]  # Optuna samples x seeds, each the searched arm at its full length (ASHA may stop it)

    def total(self, field: str) -> int:
        return sum(asdict(w)[field] for w in self.trials + self.samples)

    @property
    def shapes(self) -> set[str]:
        return {w.shape for w in self.trials + self.samples}


def study_work(study: Study) -> StudyWork:
    """Every trial's work, and an Optuna search's samples (each seed of each)."""
    known, unknown, samples = [], [], []
    for t in study.trials:
        w = trial_work(t, study.threads)
        known.append(w) if w is not None else unknown.append(t.name)
    spec = study.spec
    if spec.search.kind == "optuna":
        w = trial_work(next(t for t in study.trials if t.arm == study.search_arm), study.threads)
        samples = [w] * study.search_samples if w is not None else []
    return StudyWork(known, unknown, samples)


def study_seconds(
    study: Study, work: StudyWork, paces: dict[str, dict[str, float]], cpus: float, gpus: float
) -> float | None:
    """The wall seconds of the study's trials at ``paces`` (shape -> pace) on ``cpus`` and ``gpus``; None when a
    trial's size or a shape's pace is unknown. A Ray trial's seconds are its members' added up."""
    if work.unknown or not work.shapes <= set(paces):
        return None
    by_name = {w.name: trial_seconds(w, paces[w.shape]) for w in work.trials}
    units = [sum(by_name[t.name] for t in unit) for unit in study.units.values()]
    units += [trial_seconds(w, paces[w.shape]) for w in work.samples]
    return makespan(units, slots(study, cpus, gpus))
