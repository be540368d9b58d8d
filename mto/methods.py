"""The MIM methods by name: ``mim.method`` -> model class."""

from __future__ import annotations

from mto.bootmae import BootMAE
from mto.config import TrialConfig
from mto.conmim import ConMIM
from mto.mae import MAE
from mto.models import MaskedImageModel, create_vit
from mto.simmim import SimMIM

METHODS: dict[str, type[MaskedImageModel]] = {"simmim": SimMIM, "mae": MAE, "bootmae": BootMAE, "conmim": ConMIM}


def build_model(cfg: TrialConfig, in_chans: int) -> MaskedImageModel:
    """The configured MIM method on a fresh timm ViT, with MTO plugged in where its mask tokens live."""
    if cfg.mim.method not in METHODS:
        raise NotImplementedError(f"mim.method={cfg.mim.method!r} is not implemented; available: {', '.join(METHODS)}")
    encoder = create_vit(cfg.model, img_size=cfg.data.image_size, in_chans=in_chans)
    return METHODS[cfg.mim.method](encoder, mim=cfg.mim, mto=cfg.mto)
