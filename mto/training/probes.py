"""Frozen-feature probes: a deterministic linear probe and cosine kNN, fitted on the features' device.

Each probe's ``*_scorer`` is what its declaration in ``mto.training.logged`` names: fitted once on the training
features, it scores any split's features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def fit_linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, *, steps: int = 100, weight_decay: float = 1e-4
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Multinomial logistic regression on standardised features; returns the fitted classifier.

    Full-batch L-BFGS from a zero start: no randomness, so the same features always give the
    same classifier. Standardisation uses training statistics only (like MAE's BatchNorm probe).

    Args:
        train_x: ``[N, D]`` features. train_y: ``[N]`` labels.
        steps: L-BFGS iterations. weight_decay: L2 penalty on the weights.

    Returns:
        ``classify(x) -> [M] predicted labels`` for ``[M, D]`` features.
    """
    train_x = train_x.float()
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
    xtr = (train_x - mean) / std
    weight = torch.zeros(xtr.shape[1], num_classes, device=xtr.device, requires_grad=True)
    bias = torch.zeros(num_classes, device=xtr.device, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=steps, history_size=10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ weight + bias, train_y) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w, b = weight.detach(), bias.detach()
    return lambda x: (((x.float() - mean) / std) @ w + b).argmax(dim=1)


Scorer = Callable[[torch.Tensor, torch.Tensor], float]  # (features, labels) -> top-1


def linear_scorer(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, cfg) -> Scorer:
    """``fit_linear_probe`` with the settings of ``cfg`` (``eval``): fitted once, scores any split."""
    classify = fit_linear_probe(
        train_x, train_y, num_classes, steps=cfg.probe_steps, weight_decay=cfg.probe_weight_decay
    )
    return lambda x, y: accuracy(classify(x), y)


def knn_scorer(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, cfg) -> Scorer:
    """``knn_top1`` against the training features, with the settings of ``cfg`` (``eval``)."""
    return lambda x, y: knn_top1(train_x, train_y, x, y, num_classes, k=cfg.knn_k, temperature=cfg.knn_temperature)


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of predicted labels."""
    return predicted.eq(labels).float().mean().item()


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    *,
    steps: int = 100,
    weight_decay: float = 1e-4,
) -> float:
    """Top-1 test accuracy of ``fit_linear_probe`` fitted on the training features."""
    classify = fit_linear_probe(train_x, train_y, num_classes, steps=steps, weight_decay=weight_decay)
    return accuracy(classify(test_x), test_y)


@torch.no_grad()
def knn_top1(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    *,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> float:
    """Top-1 accuracy of weighted cosine kNN (the DINO / InstDisc protocol: votes ``exp(sim / T)``)."""
    train = F.normalize(train_x.float(), dim=1)
    test = F.normalize(test_x.float(), dim=1)
    k = min(k, train.shape[0])
    correct = torch.zeros((), device=test.device)
    for start in range(0, test.shape[0], chunk):
        sim, idx = (test[start : start + chunk] @ train.T).topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], num_classes, device=test.device)
        votes.scatter_add_(1, train_y[idx], (sim / temperature).exp())
        correct += votes.argmax(dim=1).eq(test_y[start : start + chunk]).sum()
    return (correct / test.shape[0]).item()
