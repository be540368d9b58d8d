"""BootMAE and ConMIM: momentum encoders, their targets, and the patch contrast."""

import math

import pytest
import torch
import torch.nn.functional as F

from mto.config import MIMConfig, ModelConfig, MTOConfig, TrialConfig
from mto.methods.base import build_model
from mto.methods.conmim.model import patch_contrast
from mto.methods.momentum import ema_update, momentum_copy


def _model(method, **mim):
    torch.manual_seed(0)
    cfg = TrialConfig(
        model=ModelConfig(embed_dim=32, depth=2, num_heads=2),
        mim=MIMConfig(method=method, **mim),
        mto=MTOConfig(lambda_e=0.1, lambda_r=0.1),
    )
    return build_model(cfg, in_chans=1)


@pytest.mark.parametrize("method", ["bootmae", "conmim"])
def test_momentum_encoder_gets_no_gradient_and_follows_its_ema_rule(method):
    model = _model(method, momentum=0.9)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x = torch.randn(4, 1, 16, 16)
    mask = model.sample_mask(4, torch.Generator().manual_seed(0), torch.device("cpu"))
    before = [p.detach().clone() for p in model.momentum_encoder.parameters()]
    model(x, mask)["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in model.momentum_encoder.parameters())
    opt.step()
    model.on_step_end()
    online = list(model.encoder.parameters())
    for old, new, o in zip(before, model.momentum_encoder.parameters(), online):
        assert torch.allclose(new, 0.9 * old + 0.1 * o.detach(), atol=1e-6)
    assert any(not torch.equal(old, new) for old, new in zip(before, model.momentum_encoder.parameters()))


def test_ema_update_rule_on_a_small_module():
    online = torch.nn.Linear(3, 2)
    target = momentum_copy(online)
    with torch.no_grad():
        online.weight.add_(1.0)
    expected = 0.75 * target.weight.detach().clone() + 0.25 * online.weight.detach()
    ema_update(target, online, 0.75)
    assert torch.allclose(target.weight, expected)


def test_patch_contrast_matches_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(2, 5, 4, generator=g), dim=-1)
    k = F.normalize(torch.randn(2, 5, 4, generator=g), dim=-1)
    mask = torch.tensor([[True, False, True, False, False], [False, True, False, False, True]])
    got = patch_contrast(q, k, mask, num_masked=2, temperature=0.1)
    terms = []
    for b in range(2):
        for i in mask[b].nonzero().flatten().tolist():
            logits = [float(q[b, i] @ k[b, j]) / 0.1 for j in range(5)]
            terms.append(-(logits[i] - math.log(sum(math.exp(v) for v in logits))))
    assert got.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_patch_contrast_is_low_when_queries_match_their_keys():
    k = F.normalize(torch.randn(3, 8, 16), dim=-1)
    mask = torch.zeros(3, 8, dtype=torch.bool)
    mask[:, :4] = True
    assert patch_contrast(k, k, mask, 4, 0.05) < patch_contrast(k.roll(1, dims=1), k, mask, 4, 0.05)


def test_bootmae_regresses_pixels_and_momentum_features_of_masked_patches():
    model = _model("bootmae", feature_weight=0.5)
    x = torch.randn(2, 1, 16, 16)
    out = model(x, model.sample_mask(2, torch.Generator().manual_seed(0), torch.device("cpu")))
    assert torch.isclose(out["loss_mim"], out["loss_pix"] + 0.5 * out["loss_feat"])
    assert model.feature_target(x).shape == (2, 64, 32)
    assert model.feature_decoder.mask_token is not model.decoder.mask_token  # two decoders, two mask tokens
