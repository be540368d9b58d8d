"""A study's cost before it runs, on this machine: its work (``ablations.study.cost``) and, from the pace of each of
its model shapes (``mto.training.pace``), the wall time of its trials.

A shape's pace is measured once on this machine, in a child process (the driver loads no torch): a few steps,
an evaluation and a profile of the trial as it will run, with the threads, device and compile setting it will
have. It is kept in the study's compile-cache folder (``StudyLayout.paces``, keyed by shape and machine), so the
next dry run of the study, or of another study stored there with the same shapes, is instant, and a run after a
dry run prints its estimate at once. A run never measures (it would hold up its trials): without a kept pace it
prints the work, and its board shows the time left from the pace it measures as it goes.
"""

from __future__ import annotations

import json
import os
import pickle
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ablations.run.cluster import compile_env
from ablations.run.progress import duration
from ablations.study import Study, with_threads
from ablations.study.cost import PACE_KEYS, StudyWork, shape, slots, study_seconds, study_work
from mto import TrialConfig

LONG_S = 3600.0  # a study estimated longer than this on this machine is said to be long, plainly
MEASURE_TIMEOUT_S = 900.0  # for all of a study's shapes; a compiled GPU shape compiles first


@dataclass(frozen=True)
class Estimate:
    work: StudyWork
    seconds: float | None  # the trials' wall time; None when a pace or a size is unknown (``why_none``)
    slots: int  # Ray trials at once
    where: str  # the machine it is for, e.g. "this machine (2 CPUs)"
    why_none: str = ""


def _machine() -> str:
    return f"{platform.node()}/{os.cpu_count()}cpu"


def kept(path: Path) -> dict[str, dict[str, float]]:
    """The paces kept in ``path`` for this machine, by shape (empty when none or unreadable)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    mine = saved.get(_machine(), {}) if isinstance(saved, dict) else {}
    return {k: v for k, v in mine.items() if isinstance(v, dict) and set(PACE_KEYS) <= set(v)}


def keep(path: Path, paces: dict[str, dict[str, float]]) -> None:
    """Add ``paces`` to those kept in ``path`` for this machine (other machines' are left as they are)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    saved.setdefault(_machine(), {}).update(paces)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(saved, indent=1, sort_keys=True))
    tmp.replace(path)


def measure(configs: list[TrialConfig], compile_cache: Path, gpu: bool) -> list[dict[str, float]]:
    """The pace of each of ``configs``, measured in a child process (``python -m mto.training.pace``) with the
    study's compile cache; without ``gpu`` the child sees no GPU, as a trial given none. Raises RuntimeError when
    the child fails or runs out of time."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, **compile_env(compile_cache)}  # the caches the study's trials share
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mto.training.pace"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        out, err = proc.communicate(pickle.dumps(configs), timeout=MEASURE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()  # reaped, its pipes closed
        raise RuntimeError(f"measuring took longer than {MEASURE_TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0:
        said = err.decode(errors="replace").strip().splitlines()
        raise RuntimeError(said[-1] if said else f"the measuring process exited {proc.returncode}")
    paces = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    if len(paces) != len(configs):
        raise RuntimeError(f"the measuring process gave {len(paces)} paces for {len(configs)} model shapes")
    return paces


def estimate(
    study: Study, paces_file: Path, compile_cache: Path, cpus: float, gpus: float, measure_missing: bool, say=print
) -> Estimate:
    """The study's work and the wall time of its trials on this machine (``cpus``, ``gpus``), from the paces kept
    in ``paces_file``; with ``measure_missing``, those missing are measured first (``say`` tells) and kept."""
    work = study_work(study)
    where = f"this machine ({cpus:g} CPUs" + (f", {gpus:g} GPUs)" if gpus else ")")
    gpu = study.spec.resources.gpu > 0
    if gpu and not gpus:
        return Estimate(work, None, 0, where, "its trials need GPUs and this machine has none to measure them on")
    paces = kept(paces_file)
    configs = {shape(c): c for c in (with_threads(t.config, study.threads) for t in study.trials)}
    missing = [configs[s] for s in sorted(work.shapes - set(paces))]
    if missing and measure_missing:
        say(f"measuring the pace of {len(missing)} model shape(s) on {where}: a few steps of each")
        try:
            measured = measure(missing, compile_cache, gpu)
        except RuntimeError as err:
            return Estimate(work, None, slots(study, cpus, gpus), where, f"the pace could not be measured: {err}")
        new = {shape(c): p for c, p in zip(missing, measured)}
        keep(paces_file, new)
        paces.update(new)
    seconds = study_seconds(study, work, paces, cpus, gpus)
    if work.unknown:
        why = f"an image folder's size is known only by reading it ({len(work.unknown)} trials)"
    else:
        why = "" if seconds is not None else "no pace of its shapes is kept for this machine: --dry-run measures it"
    return Estimate(work, seconds, slots(study, cpus, gpus), where, why)


def summary(est: Estimate, paces_file: Path) -> list[str]:
    """What a dry run, and the first lines of a run, say of the study's cost."""
    w, all_ = est.work, est.work.trials + est.work.samples
    reads = sum(t.evaluations * t.eval_images for t in all_)
    tuned = sum(t.finetune_epochs * t.finetune_images for t in all_)
    n = len(all_) + len(w.unknown)
    lines = [
        f"work: {n} trial{'s' if n != 1 else ''}"
        + (f" ({len(w.samples)} Optuna samples at full length: ASHA may stop some early)" if w.samples else "")
        + f", {w.total('epochs'):,} pre-training epoch{'s' if w.total('epochs') != 1 else ''}: "
        f"{w.total('train_images'):,} images through the model in "
        f"training, {reads:,} read by the evaluations"
        + (f", {w.total('finetune_epochs'):,} fine-tuning epochs ({tuned:,} images)" if tuned else "")
        + (f"; {len(w.unknown)} on an image folder not counted" if w.unknown else "")
    ]
    if est.seconds is None:
        lines.append(f"wall time: no estimate ({est.why_none}); the board shows the time left once trials run")
        return lines
    lines.append(
        f"wall time: about {duration(est.seconds)} for the trials on {est.where}, {est.slots} at a time, from the "
        f"pace of each model shape measured here (kept in {paces_file}); Ray's start and the report come on top"
    )
    if est.seconds > LONG_S:
        lines.append(
            f"this is a long study for {est.where}: about {duration(est.seconds)}. Shorten it (fewer trials, "
            "epochs or images) or run it where its trials are meant to run (a GPU: resources.gpu)"
        )
    return lines


def cost(study: Study, measure_missing: bool, say=print, cluster: bool = False) -> list[str]:
    """``summary`` of the study's cost on this machine (the CPUs and GPUs Ray would count here), from the paces kept
    in the study's folder; with ``measure_missing``, those missing are measured first. On a ``cluster`` joined with
    ``--address``, whose machines were not measured, the work alone."""
    from ablations.run.cluster import local_node
    from ablations.run.invocations import study_layout

    layout = study_layout(study)
    if cluster:
        est = Estimate(study_work(study), None, 0, "the cluster", "its machines' pace is not measured here")
    else:
        node = local_node()
        est = estimate(study, layout.paces, layout.compile_cache, node["CPU"], node["GPU"], measure_missing, say)
    return summary(est, layout.paces)
