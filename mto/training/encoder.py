"""A trial's encoder, kept: timm's own files, written from a trial's checkpoint and read back by timm alone.

An encoder is a folder of the two files timm's ``save_for_hf`` writes and ``timm.create_model("local-dir:...")``
reads (``ENCODER_FILES``):

- ``model.safetensors``: the backbone's weights under timm's own key names (``blocks.0.attn.qkv.weight``, ...);
  the method's heads, decoders, projectors, mask token and momentum copies and the optimiser state are left out;
- ``config.json``: timm's ``architecture`` and ``model_args`` (image and patch size, channels, width, depth, heads,
  position handling, layer scale, pooling), its ``pretrained_cfg`` (input size, the data set's mean and std) and,
  under ``mto``, the method, epoch, study, trial, data set and the trial's full settings.

One line loads it, with timm alone: ``timm.create_model("local-dir:FOLDER", pretrained=True, num_classes=10)``;
with no head (``num_classes=0``) the model returns the trial's probe features, the mean of the normed last
block's patch tokens. ``finetune_encoder`` fine-tunes one on any data set with ``eval.finetune``'s recipe.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from timm.models import create_model, save_for_hf

from mto.config import ConfigError, ModelConfig, TrialConfig
from mto.config.dicts import to_dict
from mto.data.datasets import ImageData, load_data
from mto.methods.backbone import Encoder, create_vit, timm_architecture
from mto.training.finetune import finetune
from mto.training.trainer import _autocast, resolve_device

ENCODER_FILES = ("model.safetensors", "config.json")  # timm's names: the weights, then how to build them
_PREFIX = "encoder."  # the encoder's keys in a method's state dict (MaskedImageModel.encoder)
_ABOUT = "mto"  # config.json's section of what timm does not read: method, epoch, study, trial, settings


def save_encoder(cfg: TrialConfig, state: dict[str, Any], folder: str | Path, **about: Any) -> Path:
    """Write the encoder of a trial's checkpoint (``Trainer.state_dict``: its epoch, its model's state and the
    data set's normalisation) into ``folder`` as timm's files; ``about`` (study, trial) goes beside the method,
    epoch, data set and settings in config.json. Returns the folder.

    Raises:
        ConfigError: the checkpoint's weights are not those of ``cfg``'s encoder.
    """
    weights = {k[len(_PREFIX) :]: v for k, v in state["model"].items() if k.startswith(_PREFIX)}
    in_chans = int(weights["patch_embed.proj.weight"].shape[1])
    with torch.random.fork_rng(devices=[]):  # its random initialisation, overwritten, draws nothing of the caller's
        vit = create_vit(cfg.model, img_size=cfg.data.image_size, in_chans=in_chans)
    try:
        vit.load_state_dict(weights)
    except RuntimeError as err:
        raise ConfigError("model", to_dict(cfg.model), f"the checkpoint's encoder ({_said(err)})") from None
    name, _ = timm_architecture(cfg.model, img_size=cfg.data.image_size, in_chans=in_chans)
    norm = {k: tuple(float(v) for v in state["normalisation"][k]) for k in ("mean", "std")}
    size = cfg.data.image_size
    # timm's description of the weights: the registered model's own (their provenance: URL, hub id, tag, licence)
    # would describe other weights; images are used whole, at the pre-training size (crop_pct 1)
    vit.pretrained_cfg = {
        "architecture": name,
        "input_size": (in_chans, size, size),
        "fixed_input_size": True,
        "interpolation": "bicubic",
        "crop_pct": 1.0,
        "crop_mode": "center",
        **norm,
        "num_classes": 0,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
    }
    about = {"method": cfg.mim.method, "epoch": int(state["epoch"]), **about, "data": cfg.data.name}
    folder = Path(folder)
    save_for_hf(vit, folder, model_config={_ABOUT: {**about, "config": to_dict(cfg)}}, safe_serialization=True)
    return folder


def encoder_folder(path: str | Path) -> Path:
    """The folder of an encoder given as its folder or one of its files; raises ConfigError when ``path`` holds
    no encoder (one line: what was found, what is expected)."""
    path = Path(path)
    folder = path.parent if path.name in ENCODER_FILES and path.is_file() else path
    missing = [f for f in ENCODER_FILES if not (folder / f).is_file()]
    if missing:
        found = "nothing there" if not path.exists() else f"no {' or '.join(missing)} in {folder}"
        raise ConfigError(
            "encoder", str(path), f"a folder with {' and '.join(ENCODER_FILES)} as a trial writes them ({found})"
        )
    return folder


def encoder_config(path: str | Path) -> dict[str, Any]:
    """The encoder's config.json: timm's ``architecture``, ``model_args``, ``pretrained_cfg``, and ``mto`` (method,
    epoch, study, trial, data, config: the trial's settings). Raises ConfigError for a file that is not one."""
    file = encoder_folder(path) / ENCODER_FILES[1]
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError("encoder", str(path), f"a {file.name} as timm writes it ({_said(err)})") from None
    if not (isinstance(config, dict) and {"architecture", "model_args"} <= set(config)):
        raise ConfigError("encoder", str(path), f"a {file.name} as timm writes it, with architecture and model_args")
    return config


def encoder_about(config: dict[str, Any]) -> dict[str, Any]:
    """The section of an encoder's config.json (``encoder_config``) that timm does not read: the method, epoch, study,
    trial, data and ``config`` (the trial's settings); empty when the file has none."""
    return config.get(_ABOUT, {})


def load_encoder(path: str | Path, num_classes: int = 0, **kwargs: Any) -> Encoder:
    """The encoder at ``path`` (its folder or one of its files) as a timm model, every weight loaded (strictly)
    through timm's own ``local-dir:`` loader; ``num_classes`` > 0 adds a new linear head on its pooled features.
    ``kwargs`` go to ``timm.create_model`` (``drop_path_rate=0.1``).

    Raises:
        ConfigError: no encoder there, or weights that do not fit the architecture its config.json names.
    """
    config = encoder_config(path)
    try:  # no head first: timm then loads strictly (with a new head it tolerates missing and unexpected keys)
        vit = create_model(f"local-dir:{encoder_folder(path)}", pretrained=True, num_classes=0, **kwargs)
    except Exception as err:  # noqa: BLE001 - timm and safetensors raise their own types for a bad file
        arch = f"{config['architecture']} {json.dumps(config['model_args'])}"
        raise ConfigError("encoder", str(path), f"weights that fit {arch} ({_said(err)})") from None
    if num_classes:
        vit.reset_classifier(num_classes)
    return vit


def finetune_encoder(
    path: str | Path, cfg: TrialConfig, *, data: ImageData | None = None
) -> tuple[dict[str, float], list[float]]:
    """Fine-tune the encoder at ``path`` on ``cfg.data`` with ``cfg.eval.finetune``'s recipe, as a trial's
    fine-tuning evaluation does with its own encoder (``mto.training.finetune``); no pre-training. The encoder's
    own model settings replace ``cfg.model``; the draws are seeded by ``cfg.train.seed`` and the encoder's epoch.

    Returns:
        (``finetune/top1``, ``val/finetune_top1`` with a validation split, ``finetune/train_loss``,
        ``finetune/seconds``; the mean training loss of each fine-tuning epoch).

    Raises:
        ConfigError: no encoder at ``path``, or images of another size or channel count than it was trained on.
    """
    config = encoder_config(path)
    about = encoder_about(config)
    settings = about.get("config", {})
    if "model" not in settings:
        raise ConfigError("encoder", str(path), "an encoder a trial wrote (config.json has no mto.config.model)")
    model = ModelConfig(**settings["model"])
    args = config["model_args"]
    size = args["img_size"][0] if isinstance(args["img_size"], list) else args["img_size"]
    if cfg.data.image_size != size:
        raise ConfigError("data.image_size", cfg.data.image_size, f"{size}, the size the encoder was trained at")
    cfg = dataclasses.replace(cfg, model=model)
    device = resolve_device(cfg)
    data = (data or load_data(cfg.data)).to(device)
    if data.in_chans != args["in_chans"]:
        raise ConfigError(
            "data.name", cfg.data.name, f"images of {args['in_chans']} channels, as the encoder was trained on"
        )
    encoder = load_encoder(path).to(device)
    epoch = int(about.get("epoch", 0))
    return finetune(cfg, encoder, data, from_epoch=epoch, autocast=_autocast(device, cfg.train.precision))


def _said(err: BaseException) -> str:
    """What an error says, on one line (torch's state-dict errors name the keys on their second), cut short."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return (text[:240] + "...") if len(text) > 240 else text or type(err).__name__
