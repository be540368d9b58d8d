import torch

from mto.methods.masking import block_masking, num_masked, random_masking
from mto.objective.heterogeneity import masked_first_order


def test_random_masking_keeps_exactly_int_n_times_one_minus_r():
    g = torch.Generator().manual_seed(0)
    for n, r in [(196, 0.75), (64, 0.6), (49, 0.5), (10, 0.33)]:
        mask = random_masking(8, n, r, generator=g)
        assert (mask.sum(1) == num_masked(n, r)).all()
        assert ((~mask).sum(1) == int(n * (1 - r))).all()


def test_random_masking_differs_between_samples():
    mask = random_masking(4, 64, 0.75, generator=torch.Generator().manual_seed(0))
    assert len({tuple(m.tolist()) for m in mask}) == 4


def test_block_masking_masks_whole_blocks_with_exact_counts():
    mask = block_masking(5, grid=8, block=2, ratio=0.6, generator=torch.Generator().manual_seed(1))
    assert (mask.sum(1) == 10 * 4).all()  # ceil(16 * 0.6) = 10 blocks of 2x2 patches
    grid = mask.view(5, 4, 2, 4, 2)
    assert (grid.all(dim=(2, 4)) == grid.any(dim=(2, 4))).all()  # each block all-or-nothing


def test_masked_first_orders_masked_tokens_first_stably():
    order = masked_first_order(torch.tensor([[False, True, False, True], [True, False, False, True]]))
    assert order.tolist() == [[1, 3, 0, 2], [0, 3, 1, 2]]
