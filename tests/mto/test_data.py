import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from mto.config import ConfigError, DataConfig
from mto.data.datasets import augment, crop_params, load_data, normalize


def test_digits_are_embedded_split_and_upsampled():
    d = load_data(DataConfig(image_size=16))  # 1,437 train = 1,293 pre-training + 144 validation (10%)
    assert d.train_x.shape == (1293, 1, 16, 16) and d.val_x.shape == (144, 1, 16, 16)
    assert d.test_x.shape == (360, 1, 16, 16) and set(d.val_y.tolist()) == set(range(10))
    assert d.train_x.dtype == torch.uint8 and d.num_classes == 10
    assert set(d.test_y.tolist()) == set(range(10))
    again = load_data(DataConfig(image_size=16))
    assert torch.equal(d.test_x, again.test_x)  # fixed split


def test_cifar_python_folder_is_read_with_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    # A synthetic folder in the real format; only torchvision's md5 check of the official files is bypassed.
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [*[(f"data_batch_{i}", 4) for i in range(1, 6)], ("test_batch", 3)]:
        batch = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, n))}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    d = load_data(DataConfig(name="cifar10", path=str(folder), image_size=32, val_fraction=0))
    assert (
        d.val_x is None
        and d.train_x.shape == (20, 3, 32, 32)
        and d.test_x.shape == (3, 3, 32, 32)
        and d.num_classes == 10
    )


def test_corrupt_cifar_folder_gives_a_config_error(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(ConfigError, match="intact cifar-10-batches-py"):
        load_data(DataConfig(name="cifar10", path=str(tmp_path), image_size=32))


def test_imagefolder_tree_is_read_resized_and_labelled(tmp_path):
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 30), (i * 100, 50, 200)).save(tmp_path / split / cls / f"{i}.png")
    d = load_data(DataConfig(name="imagefolder", path=str(tmp_path), image_size=16, val_fraction=0))
    assert d.train_x.shape == (4, 3, 16, 16) and d.num_classes == 2 and sorted(d.test_y.tolist()) == [0, 0, 1, 1]


def test_identity_crop_leaves_images_unchanged():
    x = normalize(load_data(DataConfig()).test_x[:4], torch.zeros(1), torch.ones(1))
    identity = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0]]).repeat(4, 1)
    assert torch.allclose(augment(x, identity), x, atol=1e-5)
    flipped = identity.clone()
    flipped[:, 4] = -1
    assert torch.allclose(augment(x, flipped), x.flip(-1), atol=1e-5)


def test_crop_params_respect_scale_range_and_seed():
    p = crop_params(1000, min_scale=0.3, hflip=True, generator=torch.Generator().manual_seed(0))
    area = p[:, 0] * p[:, 1]
    assert area.max() <= 1.0 + 1e-6 and area.min() >= 0.3 * 0.74
    assert (p[:, 2].abs() <= 1 - p[:, 0] + 1e-6).all() and set(p[:, 4].tolist()) == {-1.0, 1.0}
    assert torch.equal(p, crop_params(1000, min_scale=0.3, hflip=True, generator=torch.Generator().manual_seed(0)))


def _class_sorted_imagefolder(root, classes=3, per_class=6):
    for split in ("train", "val"):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8), (40 * c, 10 * i, 0)).save(root / split / f"c{c}" / f"{i}.png")


def test_an_imagefolder_subset_holds_every_class(tmp_path):
    """ImageFolder lists images class by class: the first 6 would all be class 0; ours are stratified."""
    _class_sorted_imagefolder(tmp_path)
    d = load_data(DataConfig(name="imagefolder", path=str(tmp_path), image_size=8, max_train=6, val_fraction=0))
    assert sorted(d.train_y.tolist()) == [0, 0, 1, 1, 2, 2]
    again = load_data(DataConfig(name="imagefolder", path=str(tmp_path), image_size=8, max_train=6, val_fraction=0))
    assert torch.equal(d.train_x, again.train_x)  # seeded: the same subset every time


def test_validation_probe_train_and_test_sets_are_disjoint():
    from mto.data.splits import split_off, stratified_subset

    labels = torch.arange(100) % 4
    keep, val = split_off(labels, 0.2, seed=3)
    probe = keep[stratified_subset(labels[keep], 30, seed=3)]
    assert len(val) == 20 and len(set(keep.tolist()) | set(val.tolist())) == 100
    assert not set(val.tolist()) & set(probe.tolist()) and set(probe.tolist()) <= set(keep.tolist())
    assert torch.bincount(labels[val]).tolist() == [5, 5, 5, 5]  # stratified
    d = load_data(DataConfig(image_size=8))  # the test split is carved separately, never from train
    assert d.train_x.shape[0] + d.val_x.shape[0] == 1437 and d.test_x.shape[0] == 360


def test_a_corrupt_cifar_file_is_named_before_any_training(tmp_path):
    from torchvision.datasets import CIFAR10

    from mto.data.checks import check_data

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, _ in CIFAR10.train_list + CIFAR10.test_list:
        (folder / name).write_bytes(b"not the official batch")
    with pytest.raises(ConfigError, match="data_batch_1 is missing or fails its md5 check"):
        check_data(DataConfig(name="cifar10", path=str(tmp_path), image_size=32))


def test_synthetic_data_has_the_requested_shapes_and_needs_no_path():
    d = load_data(DataConfig(name="synthetic", image_size=32, synthetic_size=[500, 100], val_fraction=0.1))
    assert d.train_x.shape == (450, 3, 32, 32) and d.val_x.shape == (50, 3, 32, 32)
    assert d.test_x.shape == (100, 3, 32, 32) and d.train_x.dtype == torch.uint8 and d.num_classes == 10
    again = load_data(DataConfig(name="synthetic", image_size=32, synthetic_size=[500, 100], val_fraction=0.1))
    assert torch.equal(d.train_x, again.train_x)  # seeded: the same images every time


def test_a_data_set_is_read_once_per_process():
    """Trials that a worker process runs one after another share the data set it read first (no second read
    or generation); a different configuration is a different data set."""
    first = load_data(DataConfig(max_train=128))
    assert load_data(DataConfig(max_train=128)) is first
    other = load_data(DataConfig(max_train=64))
    assert other is not first and other.train_x.shape[0] == 64
