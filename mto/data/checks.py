"""Whether a data set can be read, checked before anything trains: torch-free (torchvision loads only for a CIFAR
folder's md5 check), so a driver validating a study of the embedded digits never loads torch."""

from __future__ import annotations

import os

from mto.config import ConfigError, DataConfig

CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def check_data(cfg: DataConfig) -> None:
    """Raise ConfigError if the data set cannot be read (checked before any training starts)."""
    if cfg.name in ("digits", "synthetic"):
        return
    path = cfg.path or ""
    if not os.path.isdir(path):
        raise ConfigError(
            "data.path", cfg.path, f"an existing folder with the {cfg.name} data set (nothing is downloaded)"
        )
    if cfg.name in CIFAR_FOLDERS:
        folder = CIFAR_FOLDERS[cfg.name]
        if not (os.path.basename(os.path.normpath(path)) == folder or os.path.isdir(os.path.join(path, folder))):
            raise ConfigError(
                "data.path", cfg.path, f"a folder containing {folder}/ (the python version of {cfg.name})"
            )
        _check_cifar_integrity(cfg)
    else:
        imagefolder_splits(path)


def _check_cifar_integrity(cfg: DataConfig) -> None:
    """torchvision's md5 check of every CIFAR batch file, naming the first missing or corrupt one."""
    from torchvision.datasets import CIFAR10, CIFAR100, cifar

    reader = CIFAR10 if cfg.name == "cifar10" else CIFAR100
    folder = os.path.normpath(cfg.path or "")
    if os.path.basename(folder) != reader.base_folder:
        folder = os.path.join(folder, reader.base_folder)
    for name, md5 in reader.train_list + reader.test_list:
        if not cifar.check_integrity(os.path.join(folder, name), md5):  # what the reader itself checks
            raise ConfigError(
                "data.path",
                cfg.path,
                f"an intact {reader.base_folder}/: {name} is missing or fails "
                "its md5 check (torchvision's integrity check)",
            )


def imagefolder_splits(path: str) -> tuple[str, str]:
    train = os.path.join(path, "train")
    tests = [os.path.join(path, s) for s in ("val", "test") if os.path.isdir(os.path.join(path, s))]
    if not os.path.isdir(train) or not tests:
        raise ConfigError("data.path", path, "an ImageFolder root with train/ and val/ (or test/) class folders")
    return train, tests[0]
