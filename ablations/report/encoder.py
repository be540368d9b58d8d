"""``python -m ablations.report.encoder``: a trial's encoder read back from MLflow, to use, fine-tune or register.

    python -m ablations.report.encoder fetch RUN_ID [--out DIR]
    python -m ablations.report.encoder finetune (RUN_ID | FOLDER) [--set key=value ...]

``fetch`` downloads a trial run's encoder folder (timm's files) and prints where. ``finetune`` fine-tunes an
encoder, a trial run's or a folder, with ``eval.finetune``'s recipe on this machine (no pre-training, no Ray,
nothing written to MLflow): its trial's settings, with ``--set`` edits (``data.*``: another data set;
``eval.finetune.*``: the recipe; ``train.seed``, ``train.device``), and prints its accuracies.
``python -m ablations.report STUDY --register NAME`` registers the encoder of the trial the report selects
(``register_encoder``). Exit status 2, with one line: no such run, a run without an encoder, a folder that is no
encoder, settings the encoder or the data cannot take.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from ablations.contract import DEFAULT_TRACKING_URI, ENCODER_TAG, TRIAL, resolve_tracking_uri
from ablations.report.record import ReportError, TrialRecord
from ablations.study import StudyError, apply_set, validate_trial
from mto import ConfigError, check_data  # torch-free; the encoder's functions load torch, on first use

LOGGED_MODEL = "encoder_model"  # the registered encoder: an MLflow model logged with its trial run


def fetch_encoder(uri: str, run_id: str, out: Path | None = None) -> Path:
    """Download the encoder folder of trial run ``run_id`` (into ``out``, else a new temporary folder).

    Raises:
        ReportError: no such run, or a run without an encoder.
    """
    client = MlflowClient(resolve_tracking_uri(uri))
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow raises its own exception types per store
        raise ReportError(f"no run {run_id!r} in {client.tracking_uri}") from None
    path = run.data.tags.get(ENCODER_TAG)
    if not path:
        name = run.data.tags.get(TRIAL, run.info.run_name)
        raise ReportError(
            f"run {run_id} ({name}) has no encoder: only a trial that reached its last epoch logs one, "
            "and only with tracking.encoder: last"
        )
    folder = out or Path(tempfile.mkdtemp(prefix="encoder-"))
    folder.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(folder)))


def register_encoder(uri: str, trial: TrialRecord, name: str, selected_on: str) -> ModelVersion:
    """Register ``trial``'s encoder in MLflow's Model Registry as model ``name`` (a new version): logged with MLflow's
    PyTorch flavour on the trial's run (an exported graph, features out; timm's files beside it as extra files),
    so the Models page lists it and links back to the run. ``selected_on`` says why this trial. MLflow's logging
    reads the process's active tracking URI and experiment: they become the trial run's.

    Raises:
        ReportError: the trial kept no encoder.
    """
    import mlflow
    import timm
    import torch
    from mlflow.models import infer_signature

    from mto import encoder_about, encoder_config, load_encoder

    folder = fetch_encoder(uri, trial.run_id)
    config = encoder_config(folder)
    about = {k: v for k, v in encoder_about(config).items() if k != "config"}
    model = load_encoder(folder).eval()
    channels, height, width = config["pretrained_cfg"]["input_size"]
    images = torch.zeros(2, channels, height, width)  # normalised images; the batch size is free
    with torch.no_grad():
        features = model(images)
    client = MlflowClient(resolve_tracking_uri(uri))
    mlflow.set_tracking_uri(client.tracking_uri)
    mlflow.set_experiment(experiment_id=client.get_run(trial.run_id).info.experiment_id)  # where the model is kept
    info = mlflow.pytorch.log_model(
        model,
        name=LOGGED_MODEL,
        run_id=trial.run_id,
        registered_model_name=name,
        signature=infer_signature(images.numpy(), features.numpy()),
        input_example=images.numpy(),
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"timm=={timm.__version__}"],
        extra_files=[str(p) for p in sorted(folder.iterdir())],
        metadata={**about, "selected_on": selected_on},
    )
    version = str(info.registered_model_version)
    description = (
        f"The encoder of trial {trial.name} ({about.get('method')}, epoch {about.get('epoch')}), selected on "
        f"{selected_on}. Outputs its features of normalised images; timm's files are its extra_files "
        "(timm.create_model('local-dir:FOLDER', pretrained=True, num_classes=N))."
    )
    return client.update_model_version(name, version, description=description)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ablations.report.encoder", description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow tracking URI (default: %(default)s)")
    sub = p.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download a trial run's encoder folder and print where")
    fetch.add_argument("run_id", help="the trial's MLflow run id")
    fetch.add_argument("--out", type=Path, help="folder to download into (default: a new temporary folder)")
    tune = sub.add_parser("finetune", help="fine-tune an encoder with eval.finetune's recipe and print its accuracy")
    tune.add_argument("source", help="a trial's MLflow run id, or an encoder folder")
    tune.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="edit a setting")
    return p.parse_args(argv)


def finetune_settings(config: dict[str, Any], sets: list[str]) -> Any:
    """The encoder's trial settings with ``sets`` applied (``key=value``, values YAML), validated: a TrialConfig.
    The model is the encoder's: a ``model.*`` edit is refused."""
    from mto import encoder_about

    raw = encoder_about(config).get("config", {})
    for item in sets:
        if item.partition("=")[0].split(".")[0] == "model":
            raise ConfigError(item.partition("=")[0], item.partition("=")[2], "the encoder's own (model.* is fixed)")
        apply_set(raw, item)
    return validate_trial(raw)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch_encoder(args.tracking_uri, args.run_id, args.out))
            return 0
        from mto import encoder_config, finetune_encoder

        folder = Path(args.source)  # a folder (or anything that looks like a path), else a run id
        if not (folder.exists() or "/" in args.source or "\\" in args.source):
            folder = fetch_encoder(args.tracking_uri, args.source)
        cfg = finetune_settings(encoder_config(folder), args.sets)
        check_data(cfg.data)
        metrics, curve = finetune_encoder(folder, cfg)
    except (ReportError, ConfigError, StudyError) as err:
        said = "; ".join(err.problems) if isinstance(err, StudyError) else str(err)
        print(f"error: {said}", file=sys.stderr)
        return 2
    print(f"fine-tuned {folder} on {cfg.data.name}: {len(curve)} epochs, loss {curve[0]:.4f} -> {curve[-1]:.4f}")
    for key, value in metrics.items():
        print(f"{key} {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
