import torch
from timm.models.vision_transformer import Block

from mto.methods.attention import block_forward, run_blocks
from mto.objective.recalibration import hard_attention_mask, visible_to_masked_mass


def _setup(prefix=1):
    torch.manual_seed(0)
    blk = Block(16, 2, qkv_bias=True).eval()
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[:, 2:6] = True
    x = torch.randn(3, prefix + 9, 16)
    return blk, mask, x


def test_hard_mask_gives_zero_visible_to_masked_mass():
    blk, mask, x = _setup()
    _, probs = block_forward(blk, x, hard_attention_mask(mask, 1))
    assert visible_to_masked_mass(probs.mean(1), mask, 1).item() == 0.0
    _, free = block_forward(blk, x)
    assert visible_to_masked_mass(free.mean(1), mask, 1).item() > 0.1


def test_masked_queries_still_see_every_key():
    blk, mask, x = _setup()
    _, probs = block_forward(blk, x, hard_attention_mask(mask, 1))
    masked_rows = probs[:, :, 1:, 1:][mask[:, None, :].expand(-1, 2, -1)]
    assert (masked_rows > 0).all()


def test_hard_mask_shape_and_prefix_counts_as_visible():
    mask = torch.tensor([[True, False]])
    allowed = hard_attention_mask(mask, num_prefix=1)[0, 0]
    # tokens: [cls, masked patch, visible patch]; cls and the visible patch may not see the masked one
    assert allowed.tolist() == [[True, False, True], [True, True, True], [True, False, True]]


def test_explicit_attention_matches_timm_fused_forward():
    blk, mask, x = _setup()
    am = hard_attention_mask(mask, 1)
    assert torch.allclose(block_forward(blk, x)[0], blk(x), atol=1e-5)
    assert torch.allclose(block_forward(blk, x, am)[0], blk(x, attn_mask=am), atol=1e-5)


def test_run_blocks_captures_requested_layers_only():
    blk, mask, x = _setup()
    blocks = torch.nn.ModuleList([blk, Block(16, 2)])
    out, cap = run_blocks(blocks, x, num_prefix=1, token_layers=frozenset({0, 2}), prob_layers=frozenset({1}))
    assert sorted(cap.tokens) == [0, 2] and sorted(cap.probs) == [1]
    assert cap.tokens[0].shape == (3, 9, 16) and torch.equal(cap.tokens[2], out[:, 1:])
    assert cap.probs[1].shape == (3, 2, 10, 10)
