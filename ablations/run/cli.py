"""``python -m ablations.run STUDY.yaml``: validate a study, run its trials on Ray Tune, track them in MLflow.

Exit status: 0 every trial finished; 1 some trial failed (the others finished); 2 the study file,
the data, the tracking store, the storage or the cluster is unusable, or another driver runs the study
(nothing was created); 3 the tracking store stopped taking writes, busy or silent (the results are kept:
``--resume`` writes them); 130 interrupted (``--resume``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ablations.contract import own_failure
from ablations.study import Study, StudyError, load_study

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_TRACKING_DOWN = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # Ctrl-C, SIGTERM: 128 + the signal, as a shell reports it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m ablations.run",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    p.add_argument("study", help="the study file (YAML), e.g. studies/quickstart.yaml")
    p.add_argument("--dry-run", action="store_true", help="validate, print the trials and exit; starts nothing")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="edit the study before validation, e.g. --set base.train.epochs=2 (repeatable; values are YAML)",
    )
    p.add_argument("--resume", action="store_true", help="continue the latest interrupted invocation of this study")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (overrides tracking.uri of the study)")
    p.add_argument("--address", help="join an existing Ray cluster (e.g. auto or ray://host:10001)")
    p.add_argument("--no-report", action="store_true", help="skip the ablation report at the end")
    return p.parse_args(argv)


def trial_table(study: Study) -> Table:
    spec = study.spec
    grid_keys = sorted({k for t in study.trials for k in t.grid})
    units = study.units
    unit_of = {t.name: name for name, unit in units.items() for t in unit}
    fused = spec.resources.fuse > 1
    table = Table(
        title=f"study {study.name}: {len(study.trials)} trials"
        + (f" in {len(units)} Ray trials (resources.fuse: {spec.resources.fuse})" if fused else "")
        + (
            f" + {spec.search.num_samples} Optuna samples of arm {study.search_arm} x {len(spec.search_seeds)} seeds"
            if spec.search.kind == "optuna"
            else ""
        ),
        title_justify="left",
    )
    for col in ["trial", "arm", "seed", *grid_keys, "method", "epochs", "lambda spa/e/r", "recal."] + (
        ["fused unit"] if fused else []
    ):
        table.add_column(col)
    for t in study.trials:
        c = t.config
        table.add_row(
            t.name,
            t.arm + (" (reference)" if t.arm == spec.reference else ""),
            str(t.seed),
            *[str(t.grid.get(k, "")) for k in grid_keys],
            c.mim.method,
            str(c.train.epochs),
            f"{c.mto.lambda_spa:g}/{c.mto.lambda_e:g}/{c.mto.lambda_r:g}",
            c.mto.recalibration,
            *([unit_of[t.name] if len(units[unit_of[t.name]]) > 1 else "(alone)"] if fused else []),
        )
    return table


def resume_command(args: argparse.Namespace) -> str:
    """The command that resumes this invocation (same study, ``--set`` values and cluster)."""
    return " ".join(
        [
            shlex.quote(sys.executable),
            "-m ablations.run",
            shlex.quote(args.study),
            *[f"--set {shlex.quote(s)}" for s in args.sets],
            "--resume",
            *([f"--address {shlex.quote(args.address)}"] if args.address else []),
        ]
    )


def write_report(outcome: Any, out: Console, err: Console) -> None:
    """Build and print the study's report. The CLI is the pipeline's composition root: the report reads what the
    run wrote, through MLflow alone (ablations.contract); nothing else of run/ and report/ meets."""
    from ablations.report import build_report, print_summary

    try:
        report = build_report(outcome.tracking_uri, parent_run_id=outcome.parent_run_id)
        print_summary(report, out)
        err.print(f"report: {report.folder}", highlight=False, soft_wrap=True)
    except Exception as e:  # noqa: BLE001 - the runs are safe in MLflow; the report can be rebuilt
        err.print(
            f"[yellow]the report could not be built ({e}); rebuild it with python -m ablations.report "
            f"--run {outcome.parent_run_id}[/]",
            highlight=False,
            soft_wrap=True,
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out, err = Console(), Console(stderr=True)
    try:
        # a dry run shows the plan even when the data is missing here, and lists that problem after it
        study = load_study(args.study, args.sets, check_paths=not args.dry_run)
        if args.dry_run:
            out.print(trial_table(study))
            if study.spec.search.kind == "optuna":
                for path, d in study.spec.search.space.items():
                    out.print(f"  search {path}: {d.model_dump(exclude_none=True)}", highlight=False, soft_wrap=True)
            load_study(args.study, args.sets)
            from ablations.run.estimate import cost

            for line in cost(study, measure_missing=True, say=lambda s: err.print(s, highlight=False, soft_wrap=True)):
                out.print(line, highlight=False, soft_wrap=True)
            return EXIT_OK
    except StudyError as e:
        for problem in e.problems:
            err.print(f"[red]error[/] {escape(e.source)}: {escape(problem)}", highlight=False, soft_wrap=True)
        return EXIT_INVALID

    if not args.address and "ray" not in sys.modules:
        # A local Ray node then listens on loopback only, not on the machine's network address (Ray reads
        # this when it is first imported; joining a cluster with --address needs the network).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from ablations.run.runner import run_study  # deferred: Ray and MLflow load only once the study is valid
    from ablations.run.store import StoreDown, TrackingError, experiment_url, ui_command

    try:
        outcome = run_study(
            study, resume=args.resume, tracking_uri=args.tracking_uri, address=args.address, sets=args.sets
        )
    except StoreDown as e:
        err.print(
            f"[red]error[/] {escape(args.study)}: {escape(str(e))}; they stay kept. Once it takes writes again, "
            f"resume with: {escape(resume_command(args))}",
            highlight=False,
            soft_wrap=True,
        )
        return EXIT_TRACKING_DOWN
    except (StudyError, TrackingError) as e:
        for problem in getattr(e, "problems", [str(e)]):
            err.print(f"[red]error[/] {escape(args.study)}: {escape(problem)}", highlight=False, soft_wrap=True)
        return EXIT_INVALID
    err.print(
        f"\nstudy {study.name}: {len(outcome.finished)} finished, {len(outcome.failed)} failed"
        + (", interrupted" if outcome.interrupted else ""),
        highlight=False,
        soft_wrap=True,
    )
    for name, reason in sorted(outcome.failed.items()):
        err.print(f"  [red]FAILED[/] {escape(name)}: {escape(reason)}", highlight=False, soft_wrap=True)
    again = resume_command(args)
    if outcome.tracking_down:
        err.print(
            f"[red]the tracking store {escape(outcome.tracking_uri)} stopped taking writes (busy, or not answering)"
            f"[/]: {outcome.tracking_down} "
            f"writes are kept in {escape(str(outcome.folder))} and the trials' checkpoints; the MLflow runs "
            f"stay open until then.\nonce it takes writes again, make them with: {escape(again)}",
            highlight=False,
            soft_wrap=True,
        )
        return EXIT_TRACKING_DOWN
    if outcome.interrupted:
        err.print(
            f"interrupted; state saved in {outcome.folder}\nresume with: {again}", highlight=False, soft_wrap=True
        )
    elif not args.no_report and outcome.finished:
        write_report(outcome, out, err)
    machine = [name for name, reason in outcome.failed.items() if not own_failure(reason)]
    if machine and not outcome.interrupted:
        err.print(
            f"{len(machine)} failed from the machine (a lost worker or node), not from their own numbers; "
            f"resume with: {again}\n  (runs them again from their last checkpoints)",
            highlight=False,
            soft_wrap=True,
        )
    if outcome.tracking_uri.startswith(("http://", "https://")):
        browse = f"open {experiment_url(outcome.tracking_uri, outcome.experiment_id)} in a browser"
    else:
        browse = (
            f"{ui_command(outcome.tracking_uri)}\n  then open "
            f"{experiment_url('http://127.0.0.1:5000', outcome.experiment_id)}"
        )
    err.print(f"MLflow parent run {outcome.parent_run_id}\nbrowse: {browse}", highlight=False, soft_wrap=True)
    if outcome.interrupted:
        return EXIT_TERMINATED if outcome.terminated else EXIT_INTERRUPTED
    return EXIT_FAILED if outcome.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
