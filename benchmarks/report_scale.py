"""Time ``ablations.report`` over a large study: 1,000 trial runs x 100 epochs in a SQLite store.

    python benchmarks/report_scale.py [--trials 1000] [--epochs 100]

The store is built first (not timed) through the suite's own tracker: 20 arms x 10 grid points
x 5 seeds, each with a linear-probe curve and per-layer heterogeneity at every epoch. Then the
full report (tables in every format, figures, summary metrics written back, artifacts logged)
is timed. Goal: <= 10 s on the 2-core CI machine. Prints ``RESULT report_seconds <s>``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from mlflow.entities import Metric  # noqa: E402

from ablations.contract import REFERENCE_ARM, TARGET_FRACTION, TARGET_METRIC  # noqa: E402
from ablations.report import build_report  # noqa: E402
from ablations.run.tracking import StudyTracker  # noqa: E402
from ablations.study import TrialSpec  # noqa: E402
from mto.config import TrainConfig, TrialConfig  # noqa: E402


def build_store(uri: str, trials: int, epochs: int) -> str:
    """A study with ``trials`` finished runs; returns the parent run id."""
    tracker = StudyTracker(uri, "scale")
    parent = tracker.start_study(
        "scale",
        "report_scale benchmark",
        {},
        {TARGET_METRIC: "eval/linear_top1", TARGET_FRACTION: "1.0", REFERENCE_ARM: "arm00"},
    )
    cfg = TrialConfig(train=TrainConfig(epochs=epochs))
    seeds, points = 5, 10
    rng = np.random.default_rng(0)
    e = np.arange(1, epochs + 1)
    # the reference (one point, 5 seeds), then arms of 10 grid points x 5 seeds up to ``trials`` runs
    layout = [(0, 0, s) for s in range(seeds)]
    layout += [(1 + i // (points * seeds), (i // seeds) % points, i % seeds) for i in range(trials - seeds)]
    for arm, point, seed in layout:
        grid = {} if arm == 0 else {"mto.lambda_e": f"{0.01 * (point + 1):g}"}
        name = f"arm{arm:02d}-s{seed}" + (f"-lambda_e={grid['mto.lambda_e']}" if grid else "")
        tracker.open_trial(TrialSpec(name, f"arm{arm:02d}", seed, grid, cfg, f"arm00-s{seed}"))
        rate = 0.03 + 0.002 * arm + 0.001 * point
        curve = 0.8 * (1 - np.exp(-rate * e)) + rng.normal(0, 0.005, epochs)
        now = int(time.time() * 1000)
        metrics = [Metric("eval/linear_top1", float(v), now, int(s)) for s, v in zip(e, curve)]
        metrics += [Metric(f"hetero/l{l:02d}", 0.9 - 0.05 * l, now, int(s)) for s in e for l in range(5)]
        tracker.client.log_batch(tracker.run_id(name), metrics=metrics)
        tracker.end_trial(name, "FINISHED")
    tracker.end_study("FINISHED")
    return parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--profile", action="store_true", help="print where the report's time goes")
    p.add_argument("--keep", type=Path, help="keep the built store in this folder and reuse it on later runs")
    p.add_argument("--smoke", action="store_true", help="20 trials x 5 epochs: checks that it runs")
    args = p.parse_args()
    if args.smoke:
        args.trials, args.epochs = 20, 5
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{folder}/mlflow.db"
        start = time.perf_counter()
        if (folder / "parent").is_file():
            parent = (folder / "parent").read_text()
        else:
            parent = build_store(uri, args.trials, args.epochs)
            (folder / "parent").write_text(parent)
        print(f"store ready in {time.perf_counter() - start:.1f} s (not timed)")
        start = time.perf_counter()
        if args.profile:
            import cProfile
            import pstats

            with cProfile.Profile() as prof:
                report = build_report(uri, parent_run_id=parent, out=Path(tmp) / "report")
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        else:
            report = build_report(uri, parent_run_id=parent, out=Path(tmp) / "report")
        seconds = time.perf_counter() - start
        print(
            f"report over {len(report.summaries)} trial runs x {args.epochs} epochs: {seconds:.2f} s "
            f"({len(report.rows)} table rows, {len(report.files)} files); goal <= 10 s"
        )
    print(f"RESULT report_seconds {seconds:.2f}")


if __name__ == "__main__":
    main()
