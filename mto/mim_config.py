"""Settings of the masked image modeling method MTO plugs into (``mim``): the method and each method's
own knobs, with the authors' values as defaults where the authors' value suits a CIFAR-sized run
(docs/baselines.md). Torch-free, like every config module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from mto.choices import DECODER_METHODS, METHODS, MOMENTUM_DEFAULTS
from mto.errors import check as _check, check_choice as _check_choice

MAE_FAMILY_OPTIONS = ("block_masking", "pos_embed_mask_only", "norm_pix_per_channel", "weight_mask")  # read by mto.mae


@dataclass
class MIMConfig:
    """The masked image modeling method MTO is plugged into."""
    __pydantic_config__ = {"extra": "forbid"}
    method: str = "simmim"
    mask_ratio: float = 0.6
    mask_patch_size: Optional[int] = None  # SimMIM block size in pixels; None: 2 model patches
    norm_pix_loss: bool = True  # MAE family: regress per-patch normalised pixels
    decoder_dim: int = 64  # MAE family decoder width
    decoder_depth: int = 2
    decoder_heads: int = 4
    # Momentum encoders (BootMAE, ConMIM, DTM's EMA teacher); docs/baselines.md. None: the
    # method's published value (mto.choices.MOMENTUM_DEFAULTS).
    momentum: Optional[float] = None  # EMA rate at the start
    momentum_end: Optional[float] = None  # EMA rate at the end (ConMIM/DTM: per-step cosine; BootMAE: linear ramp)
    momentum_ramp_epochs: Optional[float] = None  # BootMAE ramp length; None: train.epochs / 8 (100 of 800)
    feature_weight: float = 1.0  # BootMAE: weight of the feature-regression target
    feature_weight_ramp_epochs: Optional[float] = None  # BootMAE linear ramp; None: train.epochs / 4; 0: none
    context_blocks: Optional[list[int]] = None  # BootMAE: encoder blocks (0-based) the [pixel, feature]
    #   decoders cross-attend to; None: [0, depth - 1] (the authors' fea_list=[0, 11] of 12)
    # MAE family (MAE, BootMAE); None: the method's authors' value, on for BootMAE, off for MAE.
    block_masking: Optional[bool] = None  # BEiT block masking (120/196 of the patches, in blocks of 16-60 of 196),
    #   topped up at random to mask_ratio and rolled by 0-3 patches; off: uniform random masking
    pos_embed_mask_only: Optional[bool] = None  # the decoders add their position embedding to mask tokens only
    norm_pix_per_channel: Optional[bool] = None  # norm_pix_loss per patch and channel (else per patch, MAE)
    weight_mask: Optional[bool] = None  # pixel loss weighted up at masked patches beside masked patches
    contrast_temperature: float = 0.1  # ConMIM: InfoNCE temperature
    projector_depth: int = 3  # ConMIM: layers of the MLP projector (Linear-BN-ReLU ..., last BN without affine)
    projector_hidden_dim: Optional[int] = None  # None: 4 x the encoder width (authors: 4096 for 768)
    projector_dim: Optional[int] = None  # None: the encoder width (authors: 256)
    # ConMIM: strong augmentation of the momentum branch's full view (the online view gets only the shared
    # crop/flip): colour jitter (brightness, contrast, saturation, hue), grayscale, blur, solarisation, each with its probability.
    strong_jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.2, 0.1])
    strong_jitter_prob: float = 0.8
    strong_gray_prob: float = 0.2
    strong_blur_prob: float = 0.1
    strong_solarize_prob: float = 0.2
    # DTM: per step, draw n merged tokens in 0..dtm_max_merges and k iterations in 1..dtm_max_iterations
    # (the authors' n1 = 196, k1 = 14 for 196 patches), dtm_draws times (their L = 2).
    dtm_max_merges: Optional[int] = None  # None: all patches
    dtm_max_iterations: Optional[int] = None  # None: patches per side
    dtm_draws: int = 2
    dtm_teacher: Optional[str] = None  # path of a frozen teacher encoder (torch.load, never downloaded); None: EMA
    dtm_normalize_target: bool = True  # per-token standardised targets (authors' --normalize_target)
    dtm_protect_first: bool = True  # ToMe's class_token=True on patch tokens, as the authors call it: the
    #   first patch is never merged and at most (N - 1) // 2 tokens merge per iteration

    def __post_init__(self) -> None:
        _check_choice("mim.method", self.method, METHODS)
        _check(0 < self.mask_ratio < 1, "mim.mask_ratio", self.mask_ratio, "a number strictly between 0 and 1")
        _check(self.mask_patch_size is None or self.mask_patch_size >= 1, "mim.mask_patch_size",
               self.mask_patch_size, "a positive integer (pixels) or null")
        for name in ("decoder_dim", "decoder_depth", "decoder_heads"):
            _check(getattr(self, name) >= 1, f"mim.{name}", getattr(self, name), "a positive integer")
        start, end = self.momentum_range
        _check(0 <= start < 1, "mim.momentum", self.momentum, "a number in [0, 1) or null")
        _check(start <= end <= 1, "mim.momentum_end", self.momentum_end, f"a number in [mim.momentum={start}, 1] or null")
        for name in ("momentum_ramp_epochs", "feature_weight_ramp_epochs"):
            v = getattr(self, name)
            _check(v is None or v >= 0, f"mim.{name}", v, "a number of epochs >= 0 or null")
        _check(self.feature_weight >= 0, "mim.feature_weight", self.feature_weight, "a number >= 0")
        cb = self.context_blocks
        _check(cb is None or (len(cb) == 2 and all(isinstance(b, int) and b >= 0 for b in cb)), "mim.context_blocks",
               cb, "two encoder block indices >= 0 [pixel decoder, feature decoder], or null")
        _check(self.contrast_temperature > 0, "mim.contrast_temperature", self.contrast_temperature, "a number > 0")
        _check(self.projector_depth >= 1, "mim.projector_depth", self.projector_depth, "an integer >= 1")
        for name in ("projector_hidden_dim", "projector_dim", "dtm_max_merges", "dtm_max_iterations"):
            v = getattr(self, name)
            _check(v is None or v >= 1, f"mim.{name}", v, "a positive integer or null")
        j = self.strong_jitter
        _check(len(j) == 4 and all(v >= 0 for v in j) and j[3] <= 0.5, "mim.strong_jitter", j,
               "[brightness, contrast, saturation, hue], each >= 0, hue <= 0.5")
        for name in ("strong_jitter_prob", "strong_gray_prob", "strong_blur_prob", "strong_solarize_prob"):
            _check(0 <= getattr(self, name) <= 1, f"mim.{name}", getattr(self, name), "a probability in [0, 1]")
        for name in MAE_FAMILY_OPTIONS:
            _check(getattr(self, name) is None or self.method in DECODER_METHODS, f"mim.{name}", getattr(self, name),
                   "null unless mim.method is mae or bootmae")
        _check(self.dtm_draws >= 1, "mim.dtm_draws", self.dtm_draws, "an integer >= 1")
        _check(self.dtm_teacher is None or (self.method == "dtm" and bool(self.dtm_teacher)), "mim.dtm_teacher",
               self.dtm_teacher, "a local checkpoint path with mim.method: dtm, or null")

    def mae_family_option(self, name: str) -> bool:
        """``block_masking``, ``pos_embed_mask_only``, ``norm_pix_per_channel`` or ``weight_mask`` as set,
        else the authors' value: on in BootMAE's code, off in MAE's."""
        value = getattr(self, name)
        return self.method == "bootmae" if value is None else value

    @property
    def momentum_range(self) -> tuple[float, float]:
        """(start, end) of the momentum schedule: the configured values, else the method's published ones."""
        start, end = MOMENTUM_DEFAULTS.get(self.method, (0.996, 1.0))
        start = start if self.momentum is None else self.momentum
        end = max(start, end) if self.momentum_end is None else self.momentum_end
        return start, end
