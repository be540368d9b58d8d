import torch

from mto.losses import entropy_loss, rank_loss, spa_loss

h = [torch.tensor(v) for v in (0.9, 0.8, 0.6, 0.5)]


def test_monotone_decreasing_heterogeneity_gives_zero_rank_loss():
    assert rank_loss(h, [1, 1, 1, 1]).item() == 0.0


def test_increase_with_depth_is_penalised_by_its_size():
    rising = [torch.tensor(v) for v in (0.5, 0.7, 0.6, 0.9)]
    # pairs: +0.2, -0.1, +0.3 -> mean of relu = 0.5 / 3
    assert torch.isclose(rank_loss(rising, [1, 1, 1, 1]), torch.tensor(0.5 / 3))


def test_rank_loss_margin_demands_a_strict_fall():
    flat = [torch.tensor(0.5)] * 3
    assert rank_loss(flat, [1, 1, 1]).item() == 0.0
    assert torch.isclose(rank_loss(flat, [1, 1, 1], margin=0.1), torch.tensor(0.1))


def test_rank_loss_pairs_only_covered_layers():
    rising_late = [torch.tensor(v) for v in (0.9, 0.8, 0.1, 0.95)]
    assert rank_loss(rising_late, [1, 1, 1, 0]).item() == 0.0
    assert rank_loss(rising_late, [1, 1, 1, 1]).item() > 0


def test_entropy_loss_is_minus_weighted_mean():
    assert torch.isclose(entropy_loss(h, [1, 1, 0, 0]), torch.tensor(-0.85))
    assert torch.isclose(entropy_loss(h, [3, 1, 0, 0]), torch.tensor(-(3 * 0.9 + 0.8) / 4))


def test_zero_weights_give_zero_losses():
    zeros = [0, 0, 0, 0]
    assert entropy_loss(h, zeros).item() == 0.0 and rank_loss(h, zeros).item() == 0.0
    assert spa_loss(h, zeros).item() == 0.0


def test_spa_loss_ignores_the_initial_embedding():
    mass = [torch.tensor(v) for v in (100.0, 0.2, 0.4, 0.0)]
    assert torch.isclose(spa_loss(mass, [1, 1, 1, 1]), torch.tensor(0.2))
