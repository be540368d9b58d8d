"""``python -m ablations.report``: turn a study's MLflow runs into ablation tables and figures.

Pick the study by its file, its experiment name or its parent run id (the latest invocation by
default). Writes Markdown, CSV, LaTeX and a self-contained HTML page with the figures, logs
``summary/*`` metrics on every trial run and the files as artifacts of the study's parent run,
and prints the main table. ``--register NAME`` then registers the encoder of the trial the report selects on
validation in MLflow's Model Registry. Exit status 2 when the study, its reference or its metric is missing, or
when ``--register`` finds no selected trial with an encoder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ablations.contract import DEFAULT_TRACKING_URI, validation_twin
from ablations.report.build import build_report
from ablations.report.compute import Report
from ablations.report.encoder import register_encoder
from ablations.report.record import ReportError
from ablations.report.render import FORMATS, print_summary
from ablations.study import StudyError, load_study


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ablations.report", description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("study", nargs="?", help="the study file (its name is the MLflow experiment)")
    which.add_argument("--experiment", help="the MLflow experiment (study name)")
    which.add_argument("--run", help="the study's parent run id (a specific invocation)")
    p.add_argument("--tracking-uri", help=f"MLflow tracking URI (default: the study's, else {DEFAULT_TRACKING_URI})")
    p.add_argument("--out", type=Path, help="output folder (default reports/<study>/<parent run name>)")
    p.add_argument("--format", default=",".join(FORMATS), help=f"comma-separated subset of {','.join(FORMATS)}")
    p.add_argument("--metric", help="target metric (default: the study's target.metric)")
    p.add_argument("--fraction", type=float, help="target = reference final x fraction (default: the study's)")
    p.add_argument("--epochs", help="epochs for the heterogeneity-vs-depth figure, e.g. 1,10,30")
    p.add_argument("--no-log", action="store_true", help="write files only; log nothing to MLflow")
    p.add_argument(
        "--register",
        metavar="NAME",
        help="register the encoder of the trial selected on validation in the Model Registry as model NAME",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    err = Console(stderr=True)
    uri, experiment = args.tracking_uri, args.experiment
    if args.study:
        try:
            spec = load_study(args.study, check_paths=False).spec
        except StudyError as e:
            for problem in e.problems:
                err.print(f"[red]error[/] {escape(e.source)}: {escape(problem)}", soft_wrap=True)
            return 2
        experiment, uri = spec.tracking.experiment or spec.name, uri or spec.tracking.uri
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    if not formats or set(formats) - set(FORMATS):
        err.print(f"[red]error[/] --format {args.format!r}: choose from {', '.join(FORMATS)}")
        return 2
    try:
        report = build_report(
            uri or DEFAULT_TRACKING_URI,
            parent_run_id=args.run,
            experiment=experiment,
            out=args.out,
            formats=formats,
            metric=args.metric,
            fraction=args.fraction,
            epochs=[int(e) for e in args.epochs.split(",")] if args.epochs else None,
            log=not args.no_log,
        )
    except ReportError as e:
        err.print(f"[red]error[/] {escape(str(e))}", soft_wrap=True)
        return 2
    print_summary(report, Console())
    for line in report.left_out_lines():
        err.print(escape(line), soft_wrap=True, highlight=False)
    err.print(f"wrote {report.folder}/ ({', '.join(p.name for p in report.files)})", soft_wrap=True, highlight=False)
    return register(report, args.register, err) if args.register else 0


def register(report: Report, name: str, err: Console) -> int:
    """Register the encoder of the trial ``report`` selects as model ``name``; 2 when there is none."""
    trial, metric = report.selected, validation_twin(report.record.metric)
    if trial is None or not trial.encoder:
        why = f"trial {trial.name} kept no encoder" if trial else f"no trial is selected ({metric} was not logged)"
        err.print(f"[red]error[/] --register {escape(name)}: {escape(why)}", soft_wrap=True)
        return 2
    try:
        version = register_encoder(report.record.uri, trial, name, f"{metric} (highest mean over seeds, then seed)")
    except ReportError as e:
        err.print(f"[red]error[/] --register {escape(name)}: {escape(str(e))}", soft_wrap=True)
        return 2
    err.print(
        f"registered the encoder of trial {trial.name} (run {trial.run_id}) as model {name}, version "
        f"{version.version}: models:/{name}/{version.version}",
        soft_wrap=True,
        highlight=False,
    )
    return 0
