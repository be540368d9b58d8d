"""The MIM methods by name: ``mim.method`` -> model class."""

from __future__ import annotations

from mto.bootmae import BootMAE
from mto.choices import METHODS
from mto.config import TrialConfig
from mto.conmim import ConMIM
from mto.dtm import DTM
from mto.mae import MAE
from mto.backbone import create_vit
from mto.models import MaskedImageModel
from mto.simmim import SimMIM

METHOD_CLASSES: dict[str, type[MaskedImageModel]] = {"simmim": SimMIM, "mae": MAE, "bootmae": BootMAE, "conmim": ConMIM,
                                                     "dtm": DTM}
if tuple(METHOD_CLASSES) != METHODS:  # one list of names (mto.choices), one class per name
    raise ImportError(f"mto.choices.METHODS {METHODS} and the classes {tuple(METHOD_CLASSES)} differ")


def build_model(cfg: TrialConfig, in_chans: int) -> MaskedImageModel:
    """The configured MIM method on a fresh timm ViT, with MTO plugged in where its mask tokens live."""
    encoder = create_vit(cfg.model, img_size=cfg.data.image_size, in_chans=in_chans)
    return METHOD_CLASSES[cfg.mim.method](encoder, mim=cfg.mim, mto=cfg.mto)
