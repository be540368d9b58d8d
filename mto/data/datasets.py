"""Data sets held as tensors (on the GPU when there is one), with augmentation done on the device.

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes),
  upsampled; nothing is downloaded. Fixed stratified 80/20 train/test split.
- ``cifar10`` / ``cifar100``: the standard python-pickle folders, read with torchvision.
- ``imagefolder``: any ``train/`` + ``val/`` (or ``test/``) tree of class folders, read with
  torchvision, resized (shorter side) and centre-cropped to ``image_size`` once at load time.

Everything is decoded once into a uint8 tensor; small data sets then stay on the device and
each batch is cropped, flipped and normalised there, so the loader never starves the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mto.config import ConfigError, DataConfig
from mto.data.checks import CIFAR_FOLDERS, check_data, imagefolder_splits
from mto.data.splits import split_off, stratified_subset


@dataclass
class ImageData:
    """A labelled image data set as uint8 tensors ``[N, C, H, W]`` with int64 labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: torch.Tensor  # [C], of the pre-training images scaled to [0, 1]
    std: torch.Tensor
    val_x: torch.Tensor | None = None  # the validation split, carved from train (None: no split)
    val_y: torch.Tensor | None = None

    @property
    def in_chans(self) -> int:
        return self.train_x.shape[1]

    def to(self, device: torch.device | str) -> ImageData:
        val = [None if t is None else t.to(device) for t in (self.val_x, self.val_y)]
        return ImageData(
            *(t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y)),
            self.num_classes,
            self.mean.to(device),
            self.std.to(device),
            *val,
        )


def channels(cfg: DataConfig) -> int:
    """Colour channels of the data set's images as loaded: digits are grey, every other set RGB."""
    return 1 if cfg.name == "digits" else 3


_LOADED: dict[str, ImageData] = {}  # per process: the trials a worker runs one after another share one copy
_KEEP = 2  # data sets kept per process (the most recent)


def load_data(cfg: DataConfig) -> ImageData:
    """The configured data set as CPU uint8 tensors, read or generated once per process: later calls with an
    equal configuration get the same (never modified) tensors."""
    key = repr(cfg)
    if key not in _LOADED:
        _LOADED[key] = _read(cfg)
        while len(_LOADED) > _KEEP:
            del _LOADED[next(iter(_LOADED))]
    return _LOADED[key]


def _read(cfg: DataConfig) -> ImageData:
    check_data(cfg)
    if cfg.name == "digits":
        data = _digits(cfg.image_size)
    elif cfg.name == "synthetic":
        data = _synthetic(cfg)
    elif cfg.name in CIFAR_FOLDERS:
        data = _cifar(cfg)
    else:
        data = _imagefolder(cfg)
    return split(data, cfg)


def split(data: ImageData, cfg: DataConfig) -> ImageData:
    """Carve the validation split out of train, then keep ``max_train`` of the rest; both seeded and
    stratified (``mto.data.splits``), so every trial of a study sees the same splits. Channel statistics
    are recomputed on the images pre-training uses."""
    keep, val = split_off(data.train_y, cfg.val_fraction, cfg.split_seed)
    if cfg.max_train is not None:
        keep = keep[stratified_subset(data.train_y[keep], cfg.max_train, cfg.split_seed)]
    out = _with_stats(data.train_x[keep], data.train_y[keep], data.test_x, data.test_y, data.num_classes)
    if val.numel():
        out.val_x, out.val_y = data.train_x[val], data.train_y[val]
    return out


def _with_stats(train_x, train_y, test_x, test_y, num_classes) -> ImageData:
    scaled = train_x.float() / 255.0
    mean = scaled.mean(dim=(0, 2, 3))
    std = scaled.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return ImageData(train_x, train_y.long(), test_x, test_y.long(), num_classes, mean, std)


def _resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return y.round().clamp(0, 255).to(torch.uint8)


def _digits(size: int) -> ImageData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images / 16.0 * 255.0).float()[:, None]  # [1797, 1, 8, 8]
    images = _resize_uint8(images, size)
    labels = torch.from_numpy(digits.target)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=digits.target, random_state=0
    )
    return _with_stats(images[idx_train], labels[idx_train], images[idx_test], labels[idx_test], 10)


def _synthetic(cfg: DataConfig) -> ImageData:
    """Random RGB images (uniform uint8) of ``image_size`` with random labels of 10 classes, from a fixed
    seed: CIFAR- or ImageNet-shaped data for measuring throughput without a download. Accuracies on it
    mean nothing."""
    g = torch.Generator().manual_seed(cfg.split_seed)
    (n_train, n_test), s = cfg.synthetic_size, cfg.image_size
    x = torch.randint(0, 256, (n_train + n_test, 3, s, s), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    return _with_stats(x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10)


def _cifar(cfg: DataConfig) -> ImageData:
    from torchvision.datasets import CIFAR10, CIFAR100

    root = os.path.normpath(cfg.path)
    if os.path.basename(root) == CIFAR_FOLDERS[cfg.name]:
        root = os.path.dirname(root)
    reader = CIFAR10 if cfg.name == "cifar10" else CIFAR100
    splits = []
    for train in (True, False):
        try:
            ds = reader(root, train=train, download=False)
        except RuntimeError as err:  # torchvision's md5 check failed; its hint to download does not apply
            raise ConfigError("data.path", cfg.path, f"an intact {CIFAR_FOLDERS[cfg.name]}/ folder ({err})") from err
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        splits += [_resize_uint8(x, cfg.image_size), torch.as_tensor(ds.targets)]
    return _with_stats(*splits, 10 if cfg.name == "cifar10" else 100)


def _imagefolder(cfg: DataConfig) -> ImageData:
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    tf = transforms.Compose(
        [transforms.Resize(cfg.image_size), transforms.CenterCrop(cfg.image_size), transforms.PILToTensor()]
    )
    train_dir, test_dir = imagefolder_splits(cfg.path)
    train, test = ImageFolder(train_dir, transform=tf), ImageFolder(test_dir, transform=tf)
    if train.classes != test.classes:
        raise ConfigError("data.path", cfg.path, "train/ and val/ must hold the same class folders")
    splits = []
    for ds in (train, test):
        loader = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=min(8, os.cpu_count() or 1))
        xs, ys = zip(*loader)
        x = torch.cat(xs)
        splits += [x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x[:, :3], torch.cat(ys)]
    return _with_stats(*splits, len(train.classes))


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> float, scaled to [0, 1] and standardised per channel."""
    return (x.float() / 255.0 - mean[:, None, None]) / std[:, None, None]


def crop_params(n: int, *, min_scale: float, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Per-image RandomResizedCrop + flip parameters ``[n, 5]``: width, height, centre x, centre y, flip sign.

    Widths and heights are fractions of the image side (areas in ``[min_scale, 1]``, aspect
    ratios in ``[3/4, 4/3]`` as in torchvision); centres in ``[-1, 1]`` coordinates.
    Drawn on the CPU so the same seed gives the same crops on any device.
    """
    area = torch.empty(n).uniform_(min_scale, 1.0, generator=generator)
    log_ratio = torch.empty(n).uniform_(np.log(3 / 4), np.log(4 / 3), generator=generator)
    w = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    h = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if hflip else torch.ones(n)
    return torch.stack([w, h, cx, cy, flip], dim=1)


def augment(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Apply ``crop_params`` to a float batch ``[B, C, H, W]`` on its device (one ``grid_sample``)."""
    w, h, cx, cy, flip = params.to(x.dtype).unbind(1)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([w * flip, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)  # [B, 2, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
