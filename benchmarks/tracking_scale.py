"""The driver's writes at scale: a study of 200 trials x 100 epochs logged through the tracker
(``ablations.run.tracking``: its journal and writer thread) to a local ``mlflow server`` this script starts and stops
on 127.0.0.1 (a SQLite store behind it).

    python benchmarks/tracking_scale.py [--trials 200] [--epochs 100] [--smoke]

Every epoch is logged as the driver's callbacks log it, epoch after epoch of every trial (as results arrive from
trials running side by side), each with the metrics a trial with MTO and both probes reports (18 values); every
trial's run is opened first (its tags and ~100 params) and ended last, and the study waits until the server has
taken every write (``flush``). Prints the seconds the callers spent in ``log_epoch`` (what the driver's callbacks,
hence the trials' reports, wait for) and the seconds from the first trial opened until the server had every write;
the figure is the latter per 1,000 epochs: ``RESULT tracking_seconds_per_1000_epochs <value>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ablations.run.tracking import StudyTracker  # noqa: E402
from ablations.study import TrialSpec  # noqa: E402
from benchmarks.mlflow_server import serving  # noqa: E402
from mto import TrialConfig  # noqa: E402

os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run ..." line per run ended
METRICS = [
    "train/loss",
    "train/loss_mim",
    "train/loss_e",
    "train/loss_r",
    "train/lr",
    "perf/epoch_seconds",
    "perf/images_per_second",
    "eval/linear_top1",
    "eval/knn_top1",
    "val/linear_top1",
    "val/knn_top1",
    *(f"hetero/l{layer:02d}" for layer in range(6)),
]  # with trial/epoch, which the tracker adds: 18 values per epoch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--smoke", action="store_true", help="4 trials x 5 epochs: checks that it runs")
    args = p.parse_args()
    if args.smoke:
        args.trials, args.epochs = 4, 5
    with tempfile.TemporaryDirectory() as tmp:
        with serving(f"sqlite:///{tmp}/server.db", workers=1) as base:
            tracker = StudyTracker(base, "scale")
            tracker.start_study("scale", "", {"study.yaml": ""}, {})
            start = time.perf_counter()
            names = [
                tracker.open_trial(TrialSpec(f"arm{i:03d}-s0", f"arm{i:03d}", 0, {}, TrialConfig(), "arm000-s0"))
                for i in range(args.trials)
            ]
            calls = 0.0
            for epoch in range(args.epochs):
                for i, name in enumerate(names):
                    values = {m: 1.0 / (epoch + 1) + i * 1e-3 + k * 1e-6 for k, m in enumerate(METRICS)}
                    began = time.perf_counter()
                    tracker.log_epoch(name, epoch, values)
                    calls += time.perf_counter() - began
            for name in names:
                tracker.end_trial(name, "FINISHED")
            tracker.flush()
            tracker.end_study("FINISHED")
            total = time.perf_counter() - start
    epochs = args.trials * args.epochs
    print(f"{args.trials} trials x {args.epochs} epochs ({epochs} epochs, {len(METRICS) + 1} values each) to {base}")
    print(f"callers in log_epoch: {calls:.2f} s ({1000 * calls / epochs:.2f} s per 1,000 epochs)")
    print(f"until the server had every write: {total:.1f} s")
    print(f"RESULT tracking_seconds_per_1000_epochs {1000 * total / epochs:.3f}")


if __name__ == "__main__":
    main()
