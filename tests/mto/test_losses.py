import torch

from mto.objective.losses import entropy_loss, rank_loss, spa_loss

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


def test_rank_loss_follows_its_depth_weights():
    from mto.config.depth import layer_weights

    rising = [torch.tensor(v) for v in (0.5, 0.7, 0.6, 0.9, 0.95)]  # pairs: +0.2, -0.1, +0.3, +0.05
    plain = rank_loss(rising, layer_weights("all", 4))
    assert torch.isclose(plain, torch.tensor(0.55 / 4))  # ``all``: the plain mean, as before
    # ``linear`` = 1, .75, .5, .25, 0: layer 4 is not covered; pairs weigh .875, .625, .375
    linear = rank_loss(rising, layer_weights("linear", 4))
    assert torch.isclose(linear, torch.tensor((0.875 * 0.2 + 0.375 * 0.3) / (0.875 + 0.625 + 0.375)))
    expo = rank_loss(rising, layer_weights("exp:0.5", 4))
    v = [(1 + 0.5) / 2, (0.5 + 0.25) / 2, (0.25 + 0.125) / 2, (0.125 + 0.0625) / 2]
    assert torch.isclose(expo, torch.tensor((v[0] * 0.2 + v[2] * 0.3 + v[3] * 0.05) / sum(v)))
    assert not torch.isclose(linear, plain) and not torch.isclose(expo, plain)
