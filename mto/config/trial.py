"""Typed configuration of one trial: the single definition of its settings, checked in
``__post_init__``; the suite validates study files against these very classes with pydantic (hence
``__pydantic_config__``, a plain dict: ``mto`` never imports pydantic). Defaults suit digits on a CPU.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any

from mto.config.choices import AFFINITIES, DATASETS, LAMBDA_SCHEDULES, POS_EMBEDS, PRESETS, RECALIBRATIONS, preset_depth
from mto.config.depth import LayerSchedule, check_layer_depth, check_layer_schedule, layer_weights
from mto.config.errors import check as _check
from mto.config.errors import check_choice as _check_choice
from mto.config.finetune import FinetuneConfig
from mto.config.limits import (
    MAX_BATCH,
    MAX_DEPTH,
    MAX_EPOCHS,
    MAX_IMAGE_SIZE,
    MAX_IMAGES,
    MAX_NEIGHBOURS,
    MAX_SEED,
    MAX_STEPS,
    MAX_SUBSET,
    MAX_THREADS,
    MAX_WIDTH,
    bounded,
)
from mto.config.mim import MIMConfig
from mto.methods import registry

_STRICT = {"extra": "forbid"}


def validation_size(total: int, fraction: float) -> int:
    """Training images carved out for validation: ``round(total * fraction)``, at least 1 when positive."""
    return 0 if fraction <= 0 else max(1, round(total * fraction))


@dataclass
class DataConfig:
    """Where images come from and how they are augmented (on the device)."""

    __pydantic_config__ = _STRICT
    name: str = "digits"
    path: str | None = None  # required for every data set but digits
    image_size: int = 16
    crop_min_scale: float = 0.5  # RandomResizedCrop scale range (crop_min_scale, 1)
    hflip: bool = False  # digits are not mirror-symmetric; turn on for natural images
    max_train: int | None = None  # keep N pre-training images (a seeded stratified subset; quick runs)
    val_fraction: float = 0.1  # carved from train (stratified), for selection; 0 = no validation split
    split_seed: int = 0  # the validation split and every subset: the same for all trials of a study
    synthetic_size: list[int] = field(default_factory=lambda: [50_000, 10_000])  # synthetic: train, test images

    def __post_init__(self) -> None:
        _check_choice("data.name", self.name, DATASETS)
        _check(
            len(self.synthetic_size) == 2 and 1 <= min(self.synthetic_size) <= max(self.synthetic_size) <= MAX_IMAGES,
            "data.synthetic_size",
            self.synthetic_size,
            f"[train images, test images], each 1 to {MAX_IMAGES:,} (made in memory)",
        )
        _check(
            self.name in ("digits", "synthetic") or bool(self.path),
            "data.path",
            self.path,
            f"a local folder is required for data.name={self.name!r} (nothing is downloaded)",
        )
        _check(4 <= self.image_size <= MAX_IMAGE_SIZE, "data.image_size", self.image_size, bounded(4, MAX_IMAGE_SIZE))
        _check(0 < self.crop_min_scale <= 1, "data.crop_min_scale", self.crop_min_scale, "a number in (0, 1]")
        _check(
            self.max_train is None or 1 <= self.max_train <= MAX_SUBSET,
            "data.max_train",
            self.max_train,
            f"{bounded(1, MAX_SUBSET)}, or null (every image)",
        )
        _check(0 <= self.val_fraction < 1, "data.val_fraction", self.val_fraction, "a number in [0, 1)")
        _check(0 <= self.split_seed <= MAX_SEED, "data.split_seed", self.split_seed, "an integer in [0, 2^63 - 1]")


@dataclass
class ModelConfig:
    """A timm VisionTransformer chosen by preset, with size overrides."""

    __pydantic_config__ = _STRICT
    preset: str = "tiny"
    patch_size: int = 2
    embed_dim: int | None = None  # None: the preset's
    depth: int | None = None
    num_heads: int | None = None
    drop_path: float = 0.0
    # abs: an absolute position embedding (learnt; fixed 2-D sin-cos for MAE/BootMAE, as their authors);
    # rel_bias: none, and one relative position bias table shared by all blocks (BEiT's, with class-token
    # entries: SimMIM's, ConMIM's and DTM's authors' backbone); none: no position information in the encoder.
    pos_embed: str = "abs"
    layer_scale: float | None = None  # LayerScale init of every block (authors' backbone: 0.1); None: off

    def __post_init__(self) -> None:
        _check_choice("model.preset", self.preset, tuple(PRESETS))
        _check_choice("model.pos_embed", self.pos_embed, POS_EMBEDS)
        _check(
            self.layer_scale is None or self.layer_scale > 0,
            "model.layer_scale",
            self.layer_scale,
            "a number > 0 or null (no layer scale)",
        )
        _check(1 <= self.patch_size <= MAX_IMAGE_SIZE, "model.patch_size", self.patch_size, bounded(1, MAX_IMAGE_SIZE))
        for name, most in (("embed_dim", MAX_WIDTH), ("depth", MAX_DEPTH), ("num_heads", MAX_WIDTH)):
            v = getattr(self, name)
            _check(v is None or 1 <= v <= most, f"model.{name}", v, f"{bounded(1, most)}, or null (the preset's)")
        _check(0 <= self.drop_path < 1, "model.drop_path", self.drop_path, "a number in [0, 1)")


@dataclass
class MTOConfig:
    """Masked Token Optimization: docs/method.md. All weights 0 = the plain MIM method."""

    __pydantic_config__ = _STRICT
    lambda_spa: float = 0.0  # weight of L_spa; used only with recalibration: soft
    lambda_e: float = 0.0  # weight of L_e (entropy maximisation)
    lambda_r: float = 0.0  # weight of L_r (rank loss)
    tau: float = 0.1  # temperature of the cosine similarity
    affinity: str = "cosine"
    recalibration: str = "none"
    layers_spa: LayerSchedule = "all"
    layers_e: LayerSchedule = "early:2"
    layers_r: LayerSchedule = "all"
    margin: float = 0.0  # L_r margin
    lambda_schedule: str = "constant"  # epoch schedule shared by the three lambdas
    lambda_warmup_epochs: int = 0  # for linear_warmup

    def __post_init__(self) -> None:
        for name in ("lambda_spa", "lambda_e", "lambda_r"):
            v = getattr(self, name)
            _check(v >= 0, f"mto.{name}", v, "a number >= 0")
        _check(self.tau > 0, "mto.tau", self.tau, "a number > 0")
        _check_choice("mto.affinity", self.affinity, AFFINITIES)
        _check_choice("mto.recalibration", self.recalibration, RECALIBRATIONS)
        _check_choice("mto.lambda_schedule", self.lambda_schedule, LAMBDA_SCHEDULES)
        _check(
            self.lambda_spa == 0 or self.recalibration == "soft",
            "mto.lambda_spa",
            self.lambda_spa,
            "L_spa is the soft recalibration: set mto.recalibration: soft, or lambda_spa: 0",
        )
        _check(
            0 <= self.lambda_warmup_epochs <= MAX_EPOCHS,
            "mto.lambda_warmup_epochs",
            self.lambda_warmup_epochs,
            bounded(0, MAX_EPOCHS),
        )
        for name in ("layers_spa", "layers_e", "layers_r"):
            check_layer_schedule(f"mto.{name}", getattr(self, name))

    @property
    def active(self) -> bool:
        """True when MTO changes anything: a loss weight or the hard attention mask."""
        return self.lambda_e > 0 or self.lambda_r > 0 or self.lambda_spa > 0 or self.recalibration == "hard"


@dataclass
class TrainConfig:
    """Optimisation: AdamW with warm-up and cosine decay, as in the MAE recipe."""

    __pydantic_config__ = _STRICT
    epochs: int = 30
    batch_size: int = 128
    base_lr: float = 1e-3  # lr = base_lr * batch_size / 256
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"  # auto: cuda when present, else cpu
    precision: str = "auto"  # auto: bf16 autocast on cuda, fp32 on cpu
    num_threads: int | None = None  # CPU threads; None: torch's default
    compile: bool | str = "auto"  # torch.compile the training step; auto: on CUDA only
    cuda_graphs: bool = True  # compiled on CUDA: the whole step captured as one CUDA graph and replayed
    checkpoint_every: int = 1  # epochs between checkpoints offered to the caller

    def __post_init__(self) -> None:
        _check(1 <= self.epochs <= MAX_EPOCHS, "train.epochs", self.epochs, bounded(1, MAX_EPOCHS))
        _check(2 <= self.batch_size <= MAX_BATCH, "train.batch_size", self.batch_size, bounded(2, MAX_BATCH))
        _check(self.base_lr > 0, "train.base_lr", self.base_lr, "a number > 0")
        _check(self.min_lr >= 0, "train.min_lr", self.min_lr, "a number >= 0")
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a number >= 0")
        _check(0 <= self.warmup_epochs <= MAX_EPOCHS, "train.warmup_epochs", self.warmup_epochs, bounded(0, MAX_EPOCHS))
        _check(0 <= self.seed <= MAX_SEED, "train.seed", self.seed, "an integer in [0, 2^63 - 1]")
        _check(self.grad_clip is None or self.grad_clip > 0, "train.grad_clip", self.grad_clip, "a number > 0 or null")
        _check_choice("train.device", self.device, ("auto", "cpu", "cuda"))
        _check_choice("train.precision", self.precision, ("auto", "bf16", "fp32"))
        _check(
            self.num_threads is None or 1 <= self.num_threads <= MAX_THREADS,
            "train.num_threads",
            self.num_threads,
            f"{bounded(1, MAX_THREADS)}, or null (torch's default)",
        )
        _check(
            1 <= self.checkpoint_every <= MAX_EPOCHS,
            "train.checkpoint_every",
            self.checkpoint_every,
            bounded(1, MAX_EPOCHS),
        )
        _check(self.compile in (True, False, "auto"), "train.compile", self.compile, "true, false or auto (CUDA only)")
        _check(isinstance(self.cuda_graphs, bool), "train.cuda_graphs", self.cuda_graphs, "true or false")


@dataclass
class EvalConfig:
    """Frozen-feature probes, fine-tuning, and the per-layer measurements logged while pre-training."""

    __pydantic_config__ = _STRICT
    every: int = 5  # evaluate every N epochs, and always at the last epoch
    linear: bool = True
    knn: bool = True
    knn_k: int = 20
    knn_temperature: float = 0.07
    probe_steps: int = 100  # L-BFGS iterations of the linear probe
    probe_weight_decay: float = 1e-4
    max_probe_train: int | None = None  # cap on the probe's training images (seeded stratified subset)
    hetero_batch: int = 64  # test images (seeded stratified subset) of the fixed heterogeneity batch
    hetero_tau: float = 0.1  # cosine temperature of the logged heterogeneity (same for every arm)
    affinity_epochs: list[int] = field(default_factory=list)  # epochs whose affinity maps are kept
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # end-to-end fine-tuning (off by default)

    def __post_init__(self) -> None:
        _check(1 <= self.every <= MAX_EPOCHS, "eval.every", self.every, bounded(1, MAX_EPOCHS))
        _check(1 <= self.knn_k <= MAX_NEIGHBOURS, "eval.knn_k", self.knn_k, bounded(1, MAX_NEIGHBOURS))
        _check(self.knn_temperature > 0, "eval.knn_temperature", self.knn_temperature, "a number > 0")
        _check(1 <= self.probe_steps <= MAX_STEPS, "eval.probe_steps", self.probe_steps, bounded(1, MAX_STEPS))
        _check(
            self.max_probe_train is None or 1 <= self.max_probe_train <= MAX_SUBSET,
            "eval.max_probe_train",
            self.max_probe_train,
            f"{bounded(1, MAX_SUBSET)}, or null (every training image)",
        )
        _check(self.probe_weight_decay >= 0, "eval.probe_weight_decay", self.probe_weight_decay, "a number >= 0")
        _check(self.hetero_tau > 0, "eval.hetero_tau", self.hetero_tau, "a number > 0")
        _check(1 <= self.hetero_batch <= MAX_BATCH, "eval.hetero_batch", self.hetero_batch, bounded(1, MAX_BATCH))
        _check(
            all(e >= 1 for e in self.affinity_epochs),
            "eval.affinity_epochs",
            self.affinity_epochs,
            "a list of epochs >= 1",
        )


@dataclass
class TrialConfig:
    """Everything one pre-training trial needs."""

    __pydantic_config__ = _STRICT
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mim: MIMConfig = field(default_factory=MIMConfig)
    mto: MTOConfig = field(default_factory=MTOConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        size, patch = self.data.image_size, self.model.patch_size
        _check(size % patch == 0, "model.patch_size", patch, f"must divide data.image_size={size}")
        depth, patches, epochs = (
            self.model.depth or preset_depth(self.model.preset),
            (size // patch) ** 2,
            self.train.epochs,
        )
        _check(
            all(b < depth for b in self.mim.context_blocks or ()),
            "mim.context_blocks",
            self.mim.context_blocks,
            f"block indices 0 to {depth - 1} (the encoder has {depth} blocks)",
        )
        _check(
            (self.mim.dtm_max_iterations or 0) <= patches,
            "mim.dtm_max_iterations",
            self.mim.dtm_max_iterations,
            f"at most the {patches} patches of an image (each round merges at least one), or null",
        )
        _check(
            (self.mim.dtm_max_merges or 0) <= patches,
            "mim.dtm_max_merges",
            self.mim.dtm_max_merges,
            f"at most the {patches} patches of an image, or null for all of them",
        )
        self._check_schedule(epochs)
        mps = self.mim.mask_patch_size
        _check(
            mps is None or (mps % patch == 0 and size % mps == 0),
            "mim.mask_patch_size",
            mps,
            f"a multiple of model.patch_size={patch} that divides data.image_size={size}",
        )
        self._check_depth()
        _check(
            self.mto.affinity == "cosine" or self._first_weighted_layer() != 0,
            "mto.affinity",
            self.mto.affinity,
            "attention affinity is undefined at layer 0: start layers_e/layers_r at 1 or use cosine",
        )
        self.eval.finetune.epochs_for(self.train.epochs)  # fine-tuning epochs inside the training

    def _check_schedule(self, epochs: int) -> None:
        """Every setting that names an epoch or a number of epochs lies within the training's ``epochs``."""
        _check(
            self.train.warmup_epochs <= epochs,
            "train.warmup_epochs",
            self.train.warmup_epochs,
            f"an integer in [0, train.epochs={epochs}] (the learning rate reaches its base value at its end)",
        )
        _check(
            self.eval.every <= epochs,
            "eval.every",
            self.eval.every,
            f"an integer from 1 to train.epochs={epochs} (an evaluation every N epochs, and one at the last)",
        )
        _check(
            all(e <= epochs for e in self.eval.affinity_epochs),
            "eval.affinity_epochs",
            self.eval.affinity_epochs,
            f"epochs 1 to train.epochs={epochs}",
        )
        _check(
            self.mto.lambda_warmup_epochs <= epochs,
            "mto.lambda_warmup_epochs",
            self.mto.lambda_warmup_epochs,
            f"an integer in [0, train.epochs={epochs}] (the lambdas reach their values at its end)",
        )
        for name in ("momentum_ramp_epochs", "feature_weight_ramp_epochs"):  # a method's ramps
            ramp = getattr(self.mim, name, None)
            _check(
                ramp is None or ramp <= epochs,
                f"mim.{name}",
                ramp,
                f"a number of epochs from 0 to train.epochs={epochs} (the ramp ends within the training), or null",
            )

    def _check_depth(self) -> None:
        """Every layer-depth schedule of an MTO loss that is on names only layers of the stack MTO acts on."""
        stack = f"the {registry.get(self.mim.method).mto_on} of {self.mim.method}"
        on = {
            "layers_e": self.mto.lambda_e > 0,
            "layers_r": self.mto.lambda_r > 0,
            "layers_spa": self.mto.recalibration == "soft" and self.mto.lambda_spa > 0,
        }
        for name, used in on.items():
            if used:
                check_layer_depth(f"mto.{name}", getattr(self.mto, name), self.num_mto_layers, stack)

    @property
    def num_mto_layers(self) -> int:
        """L, the number of blocks MTO sees: the encoder's (SimMIM, ConMIM) or the decoder's (MAE, BootMAE)."""
        if registry.get(self.mim.method).mto_on == "decoder":
            return self.mim.decoder_depth
        return self.model.depth or preset_depth(self.model.preset)

    def _first_weighted_layer(self) -> int | None:
        """The shallowest layer that L_e or L_r uses (None when both are off)."""
        layers = []
        for lam, sched in ((self.mto.lambda_e, self.mto.layers_e), (self.mto.lambda_r, self.mto.layers_r)):
            if lam > 0:
                layers += [i for i, w in enumerate(layer_weights(sched, self.num_mto_layers)) if w > 0]
        return min(layers) if layers else None


def section(cls: type, name: str) -> type | None:
    """The config dataclass of field ``name`` of ``cls`` (``TrialConfig``, "mim" -> ``MIMConfig``), or None
    when that field is a plain setting."""
    f = next((f for f in fields(cls) if f.name == name), None)
    if f is None or not callable(f.default_factory):
        return None
    value = f.default_factory()
    return type(value) if is_dataclass(value) else None


def setting_defaults(cls: type = TrialConfig, prefix: str = "") -> dict[str, Any]:
    """Every settable dot path of ``cls`` (``mto.lambda_e``, ``train.epochs`` ...) -> its default: the one walk
    of the config dataclasses (study validation, error messages and the configuration reference use it)."""
    out: dict[str, Any] = {}
    for f in fields(cls):
        sub = section(cls, f.name)
        if sub is not None:
            out.update(setting_defaults(sub, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = f.default_factory() if f.default is MISSING else f.default
    return out
