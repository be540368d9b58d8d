"""BootMAE's data path as its authors run it, each part against a direct computation: BEiT block masking
with the top-up and roll, the decoders' position embedding on mask tokens only, per-channel pixel targets,
the --weight_mask; and every momentum method's teacher giving the same target twice."""

import pytest
import torch

from mto.config import ConfigError, MIMConfig, ModelConfig, MTOConfig, TrialConfig
from mto.methods.base import build_model, patchify
from mto.methods.mae.model import neighbour_weights, per_channel_normalized
from mto.methods.masking import beit_block_masking, beit_blocks, topped_up_and_rolled
from tests.mto.test_baselines import _neighbour_weights_by_hand


def _model(method, in_chans=1, drop_path=0.0, **mim):
    torch.manual_seed(0)
    cfg = TrialConfig(
        model=ModelConfig(embed_dim=32, depth=3, num_heads=2, drop_path=drop_path),
        mim=MIMConfig(method=method, **mim),
        mto=MTOConfig(),
    )
    return build_model(cfg, in_chans=in_chans)


@pytest.mark.parametrize("grid,count,lo,hi", [(14, 120, 16, 60), (8, 39, 5, 20)])
def test_beit_blocks_mask_exactly_the_authors_count(grid, count, lo, hi):
    import random

    rng = random.Random(0)
    for _ in range(20):
        blocks = torch.from_numpy(beit_blocks(grid, count, lo, hi, rng))
        assert int(blocks.sum()) == count
    # blocks, not scattered patches: most masked patches have a masked 4-neighbour
    m = blocks.float()
    neighbours = torch.zeros_like(m)
    neighbours[1:] += m[:-1]
    neighbours[:-1] += m[1:]
    neighbours[:, 1:] += m[:, :-1]
    neighbours[:, :-1] += m[:, 1:]
    assert float((neighbours[blocks] > 0).float().mean()) > 0.9


def test_the_top_up_keeps_the_blocks_but_at_most_the_roll_and_masks_exactly_the_count():
    g = torch.Generator().manual_seed(0)
    blocks = torch.rand(500, 196, generator=g) < 120 / 196
    mask = topped_up_and_rolled(blocks, 147, 3, g)
    assert mask.sum(1).eq(147).all()
    lost = (blocks & ~mask).sum(1)  # block patches left visible: the k that the roll wrapped to the front
    assert lost.max() <= 3 and set(lost.tolist()) == {0, 1, 2, 3}
    none = topped_up_and_rolled(blocks, 147, 0, g)
    assert (blocks & ~none).sum() == 0


def test_bootmae_masks_beit_blocks_of_patches_only_and_mae_masks_at_random():
    boot, mae = _model("bootmae", mask_ratio=0.75), _model("mae", mask_ratio=0.75)
    assert boot.block_masking and not mae.block_masking
    g = torch.Generator().manual_seed(0)
    mask = boot.sample_mask(64, g, torch.device("cpu"))
    assert mask.shape == (64, 64) and mask.sum(1).eq(boot.num_masked).all()  # patches only, 48 of 64 each
    again = beit_block_masking(64, 8, boot.num_masked, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)  # drawn from the given generator only
    images = torch.randn(64, 1, 16, 16)
    out = boot(images[:4], mask[:4])
    assert torch.isfinite(out["loss"])
    with pytest.raises(ConfigError, match="mim.block_masking"):
        MIMConfig(method="simmim", block_masking=True)


@pytest.mark.parametrize("method", ["bootmae", "mae"])
def test_the_decoder_position_embedding_rides_on_mask_tokens_only_in_bootmae(method):
    model = _model(method)
    images = torch.randn(2, 1, 16, 16)
    mask = model.sample_mask(2, torch.Generator().manual_seed(1), torch.device("cpu"))
    keep = model.keep_indices(mask)
    latent = model.forward_encoder(images, keep)
    dec = model.decoder
    tokens = dec.tokens(latent, keep)[:, model.num_prefix :]
    visible = torch.zeros_like(tokens).scatter(
        1, keep[..., None].expand(-1, -1, tokens.shape[-1]), dec.embed(latent)[:, model.num_prefix :]
    )
    pos = dec.pos_embed.expand_as(tokens)
    vis = ~mask
    if method == "bootmae":
        assert torch.equal(tokens[vis], visible[vis])  # as the encoder left them
    else:
        assert torch.allclose(tokens[vis], (visible + pos)[vis])
    assert torch.allclose(tokens[mask], (dec.mask_token + pos)[mask])


def test_per_channel_pixel_targets_equal_a_direct_computation():
    images = torch.randn(2, 3, 8, 8)
    got = per_channel_normalized(patchify(images, 4), 3)  # [B, N, p*p*C], channel last
    for b in range(2):
        for i in range(2):
            for j in range(2):
                patch = images[b, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]  # [C, p, p]
                mean = patch.mean(dim=(1, 2), keepdim=True)
                std = (patch.var(dim=(1, 2), unbiased=False, keepdim=True) + 1e-5).sqrt()
                want = ((patch - mean) / std).permute(1, 2, 0).flatten()
                assert torch.allclose(got[b, 2 * i + j], want, atol=1e-6)
    boot = _model("bootmae", in_chans=3)
    assert torch.allclose(
        boot.pixel_target(torch.randn(2, 3, 16, 16)).view(2, 64, 4, 3).mean(2), torch.zeros(2, 64, 3), atol=1e-5
    )


def test_the_weight_mask_is_the_authors_neighbourhood_weight_on_the_pixel_loss():
    mask = torch.rand(3, 64) < 0.75
    assert torch.allclose(neighbour_weights(mask, 8), _neighbour_weights_by_hand(mask, 8))
    weighted, plain = _model("bootmae"), _model("bootmae", weight_mask=False)
    images = torch.randn(3, 1, 16, 16)
    pred = torch.randn(3, 64, 4)
    err = ((pred - weighted.pixel_target(images)) ** 2).mean(-1)
    assert torch.allclose(
        weighted.masked_mse(pred, images, mask), (err * neighbour_weights(mask, 8)).sum() / mask.sum()
    )
    assert torch.allclose(plain.masked_mse(pred, images, mask), err[mask].mean())


@pytest.mark.parametrize("method", ["bootmae", "conmim", "dtm"])
def test_teachers_give_identical_targets_twice_with_drop_path(method):
    model = _model(method, drop_path=0.5).train()
    images = torch.randn(4, 1, 16, 16)
    target = getattr(model, {"bootmae": "feature_target", "conmim": "keys", "dtm": "target"}[method])
    assert torch.equal(target(images), target(images))
    online = model.encoder  # drop-path is live in the online encoder, so the check above could fail
    assert not torch.equal(online.forward_features(images), online.forward_features(images))
    teacher = model.momentum_encoder if method != "dtm" else model.teacher
    assert not teacher.training and model.training
