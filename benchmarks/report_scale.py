"""Time ``ablations.report`` over a large study: 1,000 trial runs x 100 epochs, read from a SQLite file or
through an ``mlflow server``.

    python benchmarks/report_scale.py [--trials 1000] [--epochs 100] [--server] [--rounds 5] [--again] [--keep DIR]

The store is built first (not timed) through the suite's own tracker: 20 arms x 10 grid points x 5 seeds,
each with a linear-probe curve and per-layer heterogeneity at every epoch and two affinity maps (64 tokens,
at the middle and the last epoch). ``--server`` builds it through an ``mlflow server`` (artifacts proxied,
as a team's server holds them) and reads it through one, each started here on 127.0.0.1 and stopped after
(default workers); else the store is a SQLite file read directly. Then the full report (tables in every
format, figures, summary metrics written back, artifacts logged) is timed, ``--rounds`` times, each from
the store as built (a copy); ``--again`` times a second report right after each, over the same store (its
numbers written back already, as after the study's own report). Goals on the 2-core CI machine: <= 5 s
over the file, <= 15 s through the server. Prints ``RESULT report_seconds <median s>`` of the first
reports (``report_seconds_server`` with ``--server``); ``--smoke`` (20 trials x 5 epochs) runs both kinds
of store.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from mlflow.entities import Metric  # noqa: E402

from ablations.contract import REFERENCE_ARM, TARGET_FRACTION, TARGET_METRIC  # noqa: E402
from ablations.report import build_report  # noqa: E402
from ablations.run.layout import Invocation  # noqa: E402
from ablations.run.tracking import StudyTracker  # noqa: E402
from ablations.study import TrialSpec  # noqa: E402
from benchmarks.mlflow_server import free_port, serving  # noqa: E402
from mto.config import TrainConfig, TrialConfig  # noqa: E402

os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run ..." line per run ended
LAYERS, TOKENS, MASKED = 5, 64, 48  # the affinity maps: [layers, tokens, tokens], masked tokens first


def build_store(uri: str, trials: int, epochs: int, folder: Path) -> str:
    """A study with ``trials`` finished runs; returns the parent run id."""
    tracker = StudyTracker(uri, "scale", Invocation(folder / "invocation"))
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
        metrics += [Metric(f"hetero/l{l:02d}", 0.9 - 0.05 * l, now, int(s)) for s in e for l in range(LAYERS)]
        tracker.client.log_batch(tracker.run_id(name), metrics=metrics)
        for epoch in sorted({max(1, epochs // 2), epochs}):
            buffer = io.BytesIO()
            maps = rng.random((LAYERS, TOKENS, TOKENS), dtype=np.float32)
            np.savez(buffer, affinity=maps, num_masked=np.array(MASKED))
            tracker.log_affinity(name, epoch, buffer.getvalue())
        tracker.end_trial(name, "FINISHED")
    tracker.end_study("FINISHED")
    return parent


PORT = free_port()  # one port for every server of a run: MLflow keeps an artifact repository per artifact URI, and
# the rounds read copies of one store (the same runs), so a second server elsewhere would be sent the first's requests


def mlflow_server(db: Path, artifacts: Path) -> AbstractContextManager[str]:
    """``mlflow server`` over the SQLite file ``db`` on 127.0.0.1:``PORT`` (its default workers), artifacts proxied
    from ``artifacts``: a context yielding its URL."""
    return serving(f"sqlite:///{db}", PORT, artifacts)


def prepare(folder: Path, server: bool, trials: int, epochs: int) -> str:
    """The store as built in ``folder`` (``store.db``, ``artifacts/``), built now unless it is there already;
    returns the parent run id."""
    if (folder / "parent").is_file():
        return (folder / "parent").read_text()
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "store.db"
    if server:
        with mlflow_server(db, folder / "artifacts") as url:
            parent = build_store(url, trials, epochs, folder)
    else:
        parent = build_store(f"sqlite:///{db}", trials, epochs, folder)
    (folder / "parent").write_text(parent)
    return parent


def time_reports(folder: Path, parent: str, server: bool, again: bool, profile: bool) -> list[float]:
    """One timed report over a fresh copy of the store as built (and, ``again``, a second one right after over the
    same store, whose numbers are written back already): the seconds of each."""
    db = folder / "run.db"
    shutil.copy(folder / "store.db", db)  # the report writes back: every round starts from the store as built
    times = []
    with mlflow_server(db, folder / "artifacts") if server else _nothing(f"sqlite:///{db}") as uri:
        for which in ("first report", "report again")[: 1 + again]:
            start = time.perf_counter()
            if profile:
                import cProfile
                import pstats

                with cProfile.Profile() as prof:
                    rep = build_report(uri, parent_run_id=parent, out=folder / "report")
                pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
            else:
                rep = build_report(uri, parent_run_id=parent, out=folder / "report")
            times.append(time.perf_counter() - start)
            print(f"  {which}: {times[-1]:.2f} s, {len(rep.rows)} rows, {len(rep.files)} files", flush=True)
    return times


@contextmanager
def _nothing(uri: str) -> Iterator[str]:
    yield uri


def bench(folder: Path, server: bool, trials: int, epochs: int, rounds: int, again: bool, profile: bool) -> float:
    start = time.perf_counter()
    parent = prepare(folder, server, trials, epochs)
    kind = "mlflow server on 127.0.0.1" if server else "SQLite file"
    print(f"store ready in {time.perf_counter() - start:.1f} s (not timed)")
    print(f"report over {trials} trial runs x {epochs} epochs ({kind}):", flush=True)
    times = [time_reports(folder, parent, server, again, profile) for _ in range(rounds)]
    goal = 15 if server else 5
    for i, which in enumerate(("first report (writes every trial's numbers back)", "report again")[: 1 + again]):
        column = [t[i] for t in times]
        print(
            f"{which}: median {statistics.median(column):.2f} s of {rounds} ({', '.join(f'{t:.2f}' for t in column)})"
        )
    print(f"goal <= {goal} s")
    return statistics.median(t[0] for t in times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--server", action="store_true", help="build and read the store through an mlflow server")
    p.add_argument("--rounds", type=int, default=1, help="timed reports, each over a fresh copy of the store")
    p.add_argument("--again", action="store_true", help="time a second report after each, over the same store")
    p.add_argument("--profile", action="store_true", help="print where the report's time goes (cProfile)")
    p.add_argument("--keep", type=Path, help="keep the built store in this folder and reuse it on later runs")
    p.add_argument("--smoke", action="store_true", help="20 trials x 5 epochs, both kinds of store: checks they run")
    args = p.parse_args()
    if args.smoke:
        args.trials, args.epochs, args.rounds, args.again = 20, 5, 1, True
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        kinds = [False, True] if args.smoke else [args.server]
        results = {}
        for server in kinds:
            folder = base / f"{'server' if server else 'sqlite'}-{args.trials}x{args.epochs}"
            results[server] = bench(folder, server, args.trials, args.epochs, args.rounds, args.again, args.profile)
    for server, median in results.items():
        print(f"RESULT report_seconds{'_server' if server else ''} {median:.2f}")


if __name__ == "__main__":
    main()
