import math

import torch

from mto.methods.masking import random_masking
from mto.objective.heterogeneity import (
    attention_logits,
    heterogeneity,
    masked_first_order,
    masked_row_entropy,
    similarity,
    split_attention_heterogeneity,
    split_heterogeneity,
    token_heterogeneity,
)


def _mask(n=6, masked=(0, 1)):
    m = torch.zeros(1, n, dtype=torch.bool)
    m[0, list(masked)] = True
    return m


def test_uniform_affinity_rows_give_heterogeneity_one():
    logits = torch.zeros(1, 6, 6)
    assert torch.isclose(heterogeneity(logits, _mask()), torch.tensor(1.0))


def test_one_hot_affinity_rows_give_heterogeneity_zero():
    logits = torch.zeros(1, 6, 6)
    logits[0, :, 4] = 1e4  # every row singles out visible token 4
    assert heterogeneity(logits, _mask()).item() < 1e-6


def test_masked_columns_do_not_count():
    logits = torch.zeros(1, 6, 6)
    logits[0, :, 1] = 1e4  # a masked column: excluded, so the rows stay uniform over V
    assert torch.isclose(heterogeneity(logits, _mask()), torch.tensor(1.0))


def test_only_masked_rows_are_averaged():
    logits = torch.zeros(1, 6, 6)
    logits[0, 2:, 3] = 1e4  # visible rows are one-hot, masked rows uniform
    assert torch.isclose(heterogeneity(logits, _mask()), torch.tensor(1.0))


def test_entropy_is_normalised_by_log_visible_count():
    logits = torch.full((1, 5, 5), -1e4)
    logits[0, 0, 2] = logits[0, 0, 3] = 0.0  # mass split evenly over 2 of 4 visible tokens
    h = masked_row_entropy(logits, _mask(5, (0,)))[0, 0]
    assert torch.isclose(h, torch.tensor(math.log(2) / math.log(4)), atol=1e-5)


def test_cosine_similarity_over_temperature():
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]])
    s = similarity(x, tau=0.5)
    assert torch.allclose(s[0], torch.tensor([[2.0, 0.0, 2.0], [0.0, 2.0, 0.0], [2.0, 0.0, 2.0]]))


def test_mask_token_orthogonal_to_identical_patches_is_singular():
    # masked tokens equal to one direction, visible ones all identical: every masked row is uniform
    x = torch.zeros(1, 6, 4)
    x[0, :2, 0] = 1.0
    x[0, 2:, 1] = 1.0
    assert torch.isclose(token_heterogeneity(x, _mask(), tau=0.1), torch.tensor(1.0))


def test_attention_affinity_renormalises_over_visible_keys():
    probs = torch.zeros(1, 2, 4, 4)
    probs[:, :, :, 1] = 0.5  # half the mass on the masked key 1 ...
    probs[:, :, :, 2] = 0.25  # ... the rest split over visible 2 and 3
    probs[:, :, :, 3] = 0.25
    h = heterogeneity(attention_logits(probs), _mask(4, (1,)))
    assert torch.isclose(h, torch.tensor(math.log(2) / math.log(3)), atol=1e-5)


def test_heterogeneity_has_finite_gradients_with_masked_columns():
    x = torch.randn(2, 8, 4, requires_grad=True)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, :3] = True
    token_heterogeneity(x, mask, tau=0.1).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_split_form_equals_the_definition_for_a_stack_of_layers():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 16, 8, generator=g)  # 3 layers, batch 4, 16 tokens
    mask = random_masking(4, 16, 0.6, generator=g)
    fast = split_heterogeneity(x, masked_first_order(mask), int(mask[0].sum()), tau=0.2)
    slow = torch.stack([heterogeneity(similarity(x[k], 0.2), mask) for k in range(3)])
    assert torch.allclose(fast, slow, atol=1e-6)


def test_split_attention_form_equals_the_definition():
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(2, 4, 16, 16, generator=g).softmax(-1)  # 2 layers, head-averaged
    mask = random_masking(4, 16, 0.5, generator=g)
    fast = split_attention_heterogeneity(probs, masked_first_order(mask), int(mask[0].sum()))
    slow = torch.stack([heterogeneity(attention_logits(probs[k]), mask) for k in range(2)])
    assert torch.allclose(fast, slow, atol=1e-5)
