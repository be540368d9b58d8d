import torch

from mto.training.probes import knn_top1, linear_probe


def _blobs(n=200, d=8, classes=4, spread=0.3, seed=0):
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(123)) * 3
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    return centres[y] + spread * torch.randn(n, d, generator=g), y


def test_linear_probe_separates_separable_classes_deterministically():
    x, y = _blobs()
    xt, yt = _blobs(seed=1)
    acc = linear_probe(x, y, xt, yt, 4, steps=50)
    assert acc == 1.0 and acc == linear_probe(x, y, xt, yt, 4, steps=50)


def test_probes_are_at_chance_on_random_labels():
    x, _ = _blobs()
    y = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(3))
    xt, _ = _blobs(seed=1)
    yt = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(4))
    assert linear_probe(x, y, xt, yt, 4) < 0.45 and knn_top1(x, y, xt, yt, 4) < 0.45


def test_knn_finds_neighbours_by_cosine():
    x, y = _blobs(spread=0.05)
    xt, yt = _blobs(spread=0.05, seed=1)
    assert knn_top1(x, y, xt, yt, 4, k=5) == 1.0
    # scaling features does not change a cosine kNN
    assert knn_top1(x * 10, y, xt, yt, 4, k=5) == 1.0
