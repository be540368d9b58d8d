"""The encoder's position handling (mto.methods.backbone): the authors' relative-position backbone (timm's
VisionTransformerRelPos with one shared BEiT bias table and layer scale) and the one without any position
embedding run every method, with MTO's capture and recalibration, exactly as timm's own forward."""

import dataclasses

import pytest
import torch
from timm.models.vision_transformer_relpos import VisionTransformerRelPos

from mto.config import ConfigError, MIMConfig, ModelConfig, MTOConfig, TrialConfig
from mto.data.datasets import load_data
from mto.methods.attention import block_forward, call_block, combined_mask
from mto.methods.backbone import create_vit, embed_tokens, position_bias, run_encoder, visible_bias
from mto.methods.base import build_model
from mto.methods.registry import names
from mto.objective.recalibration import hard_attention_mask
from mto.training.finetune import classifier
from mto.training.trial import run_trial
from mto.training.unit import run_unit

AUTHORS = {"pos_embed": "rel_bias", "layer_scale": 0.1}
FULL = MTOConfig(lambda_e=0.5, lambda_r=0.5, lambda_spa=0.5, recalibration="soft")


def _cfg(method, mto=MTOConfig(), **model):
    return TrialConfig(
        model=ModelConfig(embed_dim=32, depth=3, num_heads=2, **model), mim=MIMConfig(method=method), mto=mto
    )


def _model(method, mto=MTOConfig(), seed=0, **model):
    torch.manual_seed(seed)
    return build_model(_cfg(method, mto, **model), in_chans=1)


def _batch(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 1, 16, 16, generator=g), model.sample_mask(4, g, torch.device("cpu"))


def test_the_authors_backbone_is_timms_relative_position_vit_with_one_shared_table_and_layer_scale():
    vit = create_vit(ModelConfig(embed_dim=32, depth=3, num_heads=2, **AUTHORS), img_size=16, in_chans=1)
    assert isinstance(vit, VisionTransformerRelPos) and not hasattr(vit, "pos_embed")
    table = vit.shared_rel_pos.relative_position_bias_table
    assert table.shape == ((2 * 8 - 1) ** 2 + 3, 2)  # BEiT's table: 3 extra entries for the class token
    assert all(blk.attn.rel_pos is None for blk in vit.blocks)  # the shared one only
    assert torch.equal(vit.blocks[0].ls1.gamma, torch.full((32,), 0.1))
    assert position_bias(vit).shape == (1, 2, 65, 65)
    none = create_vit(ModelConfig(embed_dim=32, depth=3, num_heads=2, pos_embed="none"), img_size=16, in_chans=1)
    assert none.pos_embed is None and position_bias(none) is None
    with pytest.raises(ConfigError, match="model.pos_embed"):
        ModelConfig(pos_embed="rope")
    with pytest.raises(ConfigError, match="model.layer_scale"):
        ModelConfig(layer_scale=0)


@pytest.mark.parametrize("pos_embed", ["abs", "rel_bias", "none"])
def test_the_encoders_token_pipeline_is_timms_own_forward(pos_embed):
    vit = create_vit(
        ModelConfig(embed_dim=32, depth=3, num_heads=2, pos_embed=pos_embed), img_size=16, in_chans=1
    ).eval()
    x = torch.randn(2, 1, 16, 16)
    ours = vit.norm(run_encoder(vit, embed_tokens(vit, vit.patch_embed(x)), position_bias(vit)))
    assert torch.allclose(ours, vit.forward_features(x), atol=1e-6)


def test_explicit_attention_with_a_position_bias_and_a_hard_mask_matches_timms_block():
    vit = create_vit(ModelConfig(embed_dim=32, depth=1, num_heads=2, **AUTHORS), img_size=8, in_chans=1).eval()
    blk, bias = vit.blocks[0], position_bias(vit)
    x = torch.randn(3, 17, 32)
    mask = torch.rand(3, 16) < 0.5
    hard = hard_attention_mask(mask, 1)
    for attn_mask in (None, hard):
        out, probs = block_forward(blk, x, attn_mask, bias)
        assert torch.allclose(out, call_block(blk, x, combined_mask(attn_mask, bias)), atol=1e-5)
    assert torch.all(probs.masked_select(~hard.expand_as(probs)) == 0)  # forbidden pairs get no attention


def test_the_bias_between_visible_tokens_is_the_full_bias_at_their_positions():
    bias = torch.randn(1, 2, 10, 10)
    keep = torch.tensor([[0, 4, 7], [8, 1, 2]])
    got = visible_bias(bias, keep, num_prefix=1)
    for b in range(2):
        idx = torch.cat([torch.tensor([0]), keep[b] + 1])
        assert torch.equal(got[b], bias[0][:, idx][:, :, idx])


@pytest.mark.parametrize("pos_embed", ["rel_bias", "none"])
@pytest.mark.parametrize("method", names())
def test_every_method_runs_on_the_backbone_and_zero_mto_weights_give_the_plain_loss_bit_for_bit(method, pos_embed):
    model = dict(AUTHORS, pos_embed=pos_embed)
    plain = _model(method, **model)
    zero = _model(method, MTOConfig(lambda_e=0.0, lambda_r=0.0, layers_e="all", tau=0.05), **model)
    x, mask = _batch(plain)
    a, b = plain(x, mask), zero(x, mask)
    assert torch.equal(a["loss"], b["loss"]) and torch.equal(a["loss"], a["loss_mim"])
    a["loss"].backward()
    if pos_embed == "rel_bias" and method not in ("mae", "bootmae"):  # the table is trained where mask tokens meet it
        assert plain.encoder.shared_rel_pos.relative_position_bias_table.grad.abs().sum() > 0
    with_mto = _model(method, FULL, **model)
    out = with_mto(x, mask)
    assert torch.isfinite(out["loss"]) and out["loss_e"] != 0 and out["loss_spa"] != 0
    out["loss"].backward()
    assert with_mto.mask_token.grad.abs().sum() > 0
    hard = _model(method, MTOConfig(lambda_e=0.1, recalibration="hard"), **model)
    assert torch.isfinite(hard(x, mask)["loss"])
    assert len(hard.stack_tokens(x, mask).tokens) == hard.objective.num_layers + 1


def test_fused_trials_on_the_authors_backbone_give_the_curves_of_separate_runs(tiny_config):
    base = dataclasses.replace(
        tiny_config,
        model=dataclasses.replace(tiny_config.model, **AUTHORS),
        train=dataclasses.replace(tiny_config.train, epochs=1),
        mto=dataclasses.replace(tiny_config.mto, lambda_e=0.1),
    )
    configs = [base, dataclasses.replace(base, train=dataclasses.replace(base.train, seed=1))]
    data = load_data(base.data)
    alone = [run_trial(c, data=data).history for c in configs]
    fused = run_unit(configs, lambda reports, failures: None, data=data)
    for solo, together in zip(alone, fused):
        assert together.history[-1]["train/loss"] == pytest.approx(solo[-1]["train/loss"], rel=1e-4)


def test_fine_tuning_copies_the_relative_position_encoder():
    cfg = _cfg("simmim", **AUTHORS)
    encoder = create_vit(cfg.model, img_size=16, in_chans=1)
    vit = classifier(encoder, cfg, num_classes=10).eval()
    table = encoder.shared_rel_pos.relative_position_bias_table
    assert torch.equal(vit.shared_rel_pos.relative_position_bias_table, table)
    x = torch.randn(2, 1, 16, 16)
    assert torch.allclose(vit.forward_features(x), encoder.eval().forward_features(x), atol=1e-6)
    assert vit(x).shape == (2, 10)
