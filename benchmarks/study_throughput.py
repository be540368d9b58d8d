"""Aggregate images/s of a whole study through ``python -m ablations.run`` (Ray Tune + MLflow).

    python benchmarks/study_throughput.py [--trials 8] [--epochs 3] [--images 50000] [--fuse 4]

A synthetic data set (``data.name: synthetic``, accuracies meaningless: the probes are off) with
SimMIM + MTO (L_e + L_r at 0.1) trials, one per seed: ViT-Tiny/4 on 32x32 at batch 256 on a GPU,
the quickstart model on 16x16 at batch 128 on a CPU. Each setting is a separate study, run as a
user runs one:

- ``packed``: ``--concurrent`` trials at a time, each ``resources.gpu: 1/concurrent`` (CPU: 1 core each);
- ``compiled``: the same with ``train.compile: true``;
- ``fused``: ``resources.fuse: --fuse`` (trials trained as one stacked model), compiled on a GPU.

Printed per setting: the study's wall-clock time and ``images / wall time`` (Ray start, compilation,
evaluation and MLflow writes included: what a user waits for), and each trial's own training
images/s (median over its epochs after the first, from MLflow). Then one trial alone in this
process (no Ray, same config) for its training images/s: the single-trial ceiling.
Last line: ``RESULT study_img_per_s <best images / wall time>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402

from benchmarks.harness import as_built_report, child_env  # noqa: E402


def study(folder: Path, name: str, args: argparse.Namespace, gpu: bool, *, compile_: bool, fuse: int) -> Path:
    size, model, batch = (32, {"preset": "vit_tiny", "patch_size": 4}, 256) if gpu else (16, {}, 128)
    concurrent = max(1, args.concurrent // fuse) if fuse > 1 else args.concurrent
    spec = {
        "name": name,
        "base": {
            "data": {"name": "synthetic", "image_size": size, "synthetic_size": [args.images, 256], "val_fraction": 0},
            "model": model,
            "train": {"epochs": args.epochs, "batch_size": batch, "warmup_epochs": 0, "compile": compile_},
            "mto": {"lambda_e": 0.1, "lambda_r": 0.1},
            "eval": {"every": args.epochs, "linear": False, "knn": False, "hetero_batch": 16},
        },
        "variants": {"mto": {}},
        "seeds": list(range(args.trials)),
        "resources": {"cpu": 1, "gpu": round(1 / concurrent, 4) if gpu else 0, "fuse": fuse},
        "max_concurrent": concurrent,
        "target": {"metric": "train/lr"},  # run with --no-report: a metric every trial logs with the probes off
        "storage": str(folder / "ray"),
        "tracking": {"uri": f"sqlite:///{folder}/mlflow.db"},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def trial_rates(uri: str, experiment: str) -> tuple[list[float], set[str]]:
    """Each trial's median training images/s over its epochs after the first, and how the trials' steps ran (their
    ``ablation.step`` tags). Stops the benchmark where a trial's step fell back: its figure would not be the
    setting's."""
    from mlflow import MlflowClient

    from ablations.contract import STEP_FALLBACK_TAG, STEP_TAG

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    rates, ways = [], set()
    for run in client.search_runs([exp.experiment_id], "tags.`ablation.role` = 'trial'"):
        if STEP_FALLBACK_TAG in run.data.tags:
            raise SystemExit(f"{run.info.run_name}: its step fell back ({run.data.tags[STEP_FALLBACK_TAG]}): no figure")
        ways.add(run.data.tags.get(STEP_TAG, "?"))
        history = sorted(client.get_metric_history(run.info.run_id, "perf/img_per_s"), key=lambda m: m.step)
        values = [m.value for m in history[1:]] or [m.value for m in history]
        if values:
            rates.append(statistics.median(values))
    return rates, ways


def alone(path: Path) -> float:
    """One trial of the study in this process, no Ray: its median training images/s after the first epoch."""
    from ablations.study import load_study
    from mto.training.trial import run_trial

    history = run_trial(load_study(path).trials[0].config, as_built_report).history
    rates = [h["perf/img_per_s"] for h in history if "perf/img_per_s" in h]
    return statistics.median(rates[1:] or rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--images", type=int, default=50_000, help="synthetic training images")
    p.add_argument("--concurrent", type=int, default=None, help="trials at a time (default: 4 on a GPU, 2 on a CPU)")
    p.add_argument("--fuse", type=int, default=4)
    p.add_argument("--settings", default="packed,compiled,fused")
    p.add_argument("--smoke", action="store_true", help="2 trials x 1 epoch x 256 images, packed only: checks it runs")
    args = p.parse_args()
    if args.smoke:
        args.trials, args.epochs, args.images, args.settings = 2, 1, 256, "packed"
    gpu = torch.cuda.is_available()
    args.concurrent = args.concurrent or (4 if gpu else 2)
    print(
        f"device {torch.cuda.get_device_name() if gpu else f'cpu ({os.cpu_count()} cores)'}; "
        f"{args.trials} trials x {args.epochs} epochs x {args.images} synthetic images"
    )
    settings = {
        "packed": dict(compile_=False, fuse=1),
        "compiled": dict(compile_=True, fuse=1),
        "fused": dict(compile_=gpu, fuse=args.fuse),
    }
    best = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = child_env()
        for name in args.settings.split(","):
            path = study(folder, f"throughput-{name}", args, gpu, **settings[name])
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "ablations.run", str(path), "--no-report"],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                print(proc.stderr[-3000:])
                raise SystemExit(f"setting {name}: the study failed (exit {proc.returncode})")
            batch = 256 if gpu else 128
            images = args.trials * args.epochs * (args.images // batch) * batch
            rates, ways = trial_rates(f"sqlite:///{folder}/mlflow.db", f"throughput-{name}")
            best = max(best, images / wall)
            print(
                f"{name:9s} wall {wall:7.1f} s  study {images / wall:9.0f} img/s  per trial (training) "
                f"median {statistics.median(rates):8.0f} img/s over {len(rates)} trials; "
                f"steps {', '.join(sorted(ways))}"
            )
        print(f"one trial alone, in-process: {alone(path):.0f} img/s (training)")
    print(f"RESULT study_img_per_s {best:.0f}")


if __name__ == "__main__":
    main()
