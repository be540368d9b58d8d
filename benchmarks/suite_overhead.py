"""What the suite costs: the quickstart study through Ray Tune + MLflow, against its trials run
one after another in a single process.

    python benchmarks/suite_overhead.py [--epochs 10]

Both sides run the same trials with the same threads per trial (the study's ``resources.cpu``).
The suite's wall time includes starting Ray, the MLflow store, driver-side logging and
checkpoints; it also runs ``max_concurrent`` trials at a time, which is part of what it offers.
Goal: ratio <= 1.10. Prints ``RESULT suite_overhead <suite wall / serial sum>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ablations.study import load_study  # noqa: E402
from benchmarks.harness import as_built_report, child_env  # noqa: E402
from mto.training.trial import run_trial  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default=str(ROOT / "studies" / "quickstart.yaml"))
    p.add_argument("--epochs", type=int, default=10, help="epochs per trial (the quickstart has 20)")
    p.add_argument("--smoke", action="store_true", help="one epoch per trial: checks that it runs")
    args = p.parse_args()
    if args.smoke:
        args.epochs = 1
    # the study's own epoch settings may lie past the end (its warm-up, evaluations and affinity epochs)
    short = min(2, args.epochs)
    sets = [
        f"base.train.epochs={args.epochs}",
        f"base.train.warmup_epochs={short}",
        f"base.eval.every={short}",
        "base.eval.affinity_epochs=[1]",
    ]
    study = load_study(args.study, sets)
    threads = max(1, math.ceil(study.spec.resources.cpu))

    serial = 0.0
    for t in study.trials:
        cfg = dataclasses.replace(t.config, train=dataclasses.replace(t.config.train, num_threads=threads))
        start = time.perf_counter()
        run_trial(cfg, as_built_report)
        serial += time.perf_counter() - start
    print(f"serial: {len(study.trials)} trials in one process, {threads} thread(s) each: {serial:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "ablations.run",
            args.study,
            "--no-report",
            *[a for s in sets for a in ("--set", s)],
            "--set",
            f"storage={tmp}/ray",
            "--set",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        ]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=child_env(), capture_output=True, text=True)
        suite = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"the study failed:\n{proc.stderr}")
    print(
        f"suite: python -m ablations.run (Ray Tune, MLflow, max_concurrent={study.spec.max_concurrent}): {suite:.1f} s"
    )
    print(f"RESULT suite_overhead {suite / serial:.3f}")


if __name__ == "__main__":
    main()
