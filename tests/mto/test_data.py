import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from mto.config import ConfigError, DataConfig
from mto.data import augment, crop_params, load_data, normalize


def test_digits_are_embedded_split_and_upsampled():
    d = load_data(DataConfig(image_size=16))
    assert d.train_x.shape == (1437, 1, 16, 16) and d.test_x.shape == (360, 1, 16, 16)
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
    d = load_data(DataConfig(name="cifar10", path=str(folder), image_size=32))
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (3, 3, 32, 32) and d.num_classes == 10


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
    d = load_data(DataConfig(name="imagefolder", path=str(tmp_path), image_size=16))
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
