"""The baselines as their authors wrote them: BootMAE's injection and schedules, ConMIM's
momentum-branch augmentation and schedule, MAE's fixed sin-cos embedding, weight-decay groups, DTM."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mto.config import ConfigError, DataConfig, EvalConfig, MIMConfig, ModelConfig, MTOConfig, TrainConfig, TrialConfig
from mto.data.augment import StrongAugmentation, strong_augment
from mto.methods.base import build_model
from mto.methods.dtm.model import bipartite_matching, draw_morphing, group_average, morph_groups, morphed_loss
from mto.methods.mae.model import sincos_position_embedding
from mto.methods.momentum import cosine_momentum, linear_ramp_momentum, linear_weight_ramp
from mto.methods.registry import names
from mto.training.optim import param_groups
from mto.training.trainer import Trainer

METHODS = names()


def _cfg(method, mto=MTOConfig(), model=None, **mim):
    return TrialConfig(
        model=ModelConfig(embed_dim=32, depth=3, num_heads=2, **(model or {})),
        mim=MIMConfig(method=method, **mim),
        mto=mto,
    )


def _model(method, seed=0, model=None, **mim):
    torch.manual_seed(seed)
    return build_model(_cfg(method, model=model, **mim), in_chans=1)


def _batch(model, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 16, 16, generator=g), model.sample_mask(n, g, torch.device("cpu"))


# ---- BootMAE ---------------------------------------------------------------------------------
def test_bootmae_masked_decoder_outputs_change_when_the_injected_encoder_features_change():
    model = _model("bootmae")
    x, mask = _batch(model)
    keep = model.keep_indices(mask)
    feats = dict.fromkeys(model.context_blocks)
    latent = model.forward_encoder(x, keep, feats)
    tokens = model.decoder.tokens(latent, keep)  # the decoder's input is held fixed

    def masked_prediction(context):
        out, _ = model.run_stack(
            model.decoder.blocks,
            tokens,
            mask,
            frozenset(),
            frozenset(),
            cross=[lambda h, c=c: c(h, context) for c in model.cross_pixel],
        )
        return model.decoder.head(out)[mask]

    base = masked_prediction(feats[0])
    changed = masked_prediction(feats[0] + torch.randn_like(feats[0]))
    assert not torch.allclose(base, changed, atol=1e-4)
    assert torch.equal(base, masked_prediction(feats[0]))


def test_bootmae_decoders_read_the_first_and_the_last_encoder_block_by_default():
    assert _model("bootmae").context_blocks == [0, 2]  # depth 3: the authors' bootmae_base fea_list=[0, 11] of 12
    with pytest.raises(ConfigError, match="mim.context_blocks"):
        _model("bootmae", context_blocks=[0, 3])


@pytest.mark.parametrize("weight_mask", [False, True])
def test_bootmae_feature_loss_compares_layer_normed_prediction_and_target_on_masked_patches(weight_mask):
    model = _model("bootmae", feature_weight=0.5, weight_mask=weight_mask)
    x, mask = _batch(model)
    out = model(x, mask)
    keep = model.keep_indices(mask)
    feats = dict.fromkeys(model.context_blocks)
    latent = model.forward_encoder(x, keep, feats)
    h, _ = model.run_stack(
        model.feature_decoder.blocks,
        model.feature_decoder.tokens(latent, keep),
        mask,
        frozenset(),
        frozenset(),
        cross=[lambda t, c=c: c(t, feats[2]) for c in model.cross_feature],
    )
    pred = model.feature_decoder.head(h)
    enc = model.momentum_encoder
    target = enc.blocks(enc._pos_embed(enc.patch_embed(x)))[:, 1:]  # last block, before the final norm
    ln = lambda t: (t - t.mean(-1, keepdim=True)) / (t.var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt()
    weights = _neighbour_weights_by_hand(mask, 8) if weight_mask else mask.float()
    direct = (((ln(pred) - ln(target)) ** 2).mean(-1) * weights).sum() / mask.sum()
    assert torch.allclose(out["loss_feat"], direct, atol=1e-5)
    assert torch.allclose(out["loss_mim"], out["loss_pix"] + 0.5 * out["loss_feat"])


def test_bootmae_schedules_follow_the_authors_ramps():
    # utils.adjust_ema_momentum: 0.999 + epoch / 100 * (0.9999 - 0.999) for epoch < 100 (of 800)
    assert linear_ramp_momentum(0, 100, 0.999, 0.9999) == 0.999
    assert linear_ramp_momentum(50, 100, 0.999, 0.9999) == pytest.approx(0.99945)
    assert linear_ramp_momentum(300, 100, 0.999, 0.9999) == 0.9999
    # feature_weight * min(4 (1 + epoch) / epochs, 1)
    assert [linear_weight_ramp(e, 8 / 4, 1.0) for e in range(4)] == [0.5, 1.0, 1.0, 1.0]
    model = _model("bootmae")
    model.configure_run(steps_per_epoch=2, epochs=16, mean=torch.zeros(1), std=torch.ones(1))
    seen = []
    for _ in range(8):
        seen.append((model.current_momentum, model.current_feature_weight))
        model.on_step_end()
    assert seen[0] == (0.999, 0.25) and seen[2] == (pytest.approx(0.999 + 0.0009 / 2), 0.5)
    assert seen[7] == (0.9999, 1.0)


# ---- momentum encoders -------------------------------------------------------------------
@pytest.mark.parametrize(
    "method,attr", [("bootmae", "momentum_encoder"), ("conmim", "momentum_encoder"), ("dtm", "teacher")]
)
def test_momentum_encoders_get_no_gradient_and_follow_their_schedule(method, attr):
    model = _model(method, momentum=0.9, momentum_end=0.99)
    model.configure_run(steps_per_epoch=1, epochs=3, mean=torch.zeros(1), std=torch.ones(1))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    target = getattr(model, attr)
    for step in range(3):
        x, mask = _batch(model, seed=step)
        before = [p.detach().clone() for p in target.parameters()]
        model(x, mask)["loss"].backward()
        assert all(p.grad is None and not p.requires_grad for p in target.parameters())
        opt.step()
        opt.zero_grad()
        m = model.current_momentum
        expected = (
            linear_ramp_momentum(step, 3 / 8, 0.9, 0.99) if method == "bootmae" else cosine_momentum(step, 3, 0.9, 0.99)
        )
        assert m == pytest.approx(expected)
        model.on_step_end()
        for old, new, online in zip(before, target.parameters(), model.encoder.parameters()):
            assert torch.allclose(new, m * old + (1 - m) * online, atol=1e-6)


def test_cosine_momentum_rises_from_start_to_end_per_step():
    values = [cosine_momentum(t, 10, 0.996, 1.0) for t in range(11)]
    assert values[0] == 0.996 and values[-1] == 1.0 and values[5] == pytest.approx(0.998)
    assert all(a < b for a, b in zip(values, values[1:]))
    assert cosine_momentum(3, None, 0.996, 1.0) == 0.996  # the run's length unknown: the start value


def test_method_defaults_are_the_published_momentum_schedules():
    assert MIMConfig(method="bootmae").momentum_range == (0.999, 0.9999)
    assert MIMConfig(method="conmim").momentum_range == (0.996, 1.0)
    assert MIMConfig(method="conmim", momentum=0.99).momentum_range == (0.99, 1.0)
    with pytest.raises(ConfigError, match="mim.momentum_end"):
        MIMConfig(method="conmim", momentum=0.99, momentum_end=0.9)


# ---- ConMIM ------------------------------------------------------------------------------
def test_conmim_strong_augmentation_changes_only_the_momentum_branch():
    none = dict(
        strong_jitter=[0.0, 0.0, 0.0, 0.0],
        strong_jitter_prob=0.0,
        strong_gray_prob=0.0,
        strong_blur_prob=0.0,
        strong_solarize_prob=0.0,
    )
    plain, strong = _model("conmim", **none), _model("conmim", strong_solarize_prob=1.0)
    x, mask = _batch(plain)
    x = x.clamp(-1, 1)  # pixels 0.5 +- 0.5 with the default mean 0.5 / std 0.5 below
    for m in (plain, strong):
        m.configure_run(1, 1, mean=torch.full((1,), 0.5), std=torch.full((1,), 0.5))
    online = [m.encode_masked(x, mask, frozenset(), frozenset())[0] for m in (plain, strong)]
    assert torch.equal(online[0], online[1])
    assert torch.allclose(plain.momentum_view(x), x, atol=1e-6)
    assert not torch.allclose(strong.momentum_view(x), x, atol=1e-3)
    assert not torch.allclose(plain.keys(x), strong.keys(x), atol=1e-4)
    strong.eval()
    assert torch.equal(strong.momentum_view(x), x)  # evaluation sees the clean view


def test_strong_augmentation_operations_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 8, 8, generator=g)
    aug = StrongAugmentation()
    p = aug.params(5, torch.Generator().manual_seed(1))
    assert torch.equal(p, aug.params(5, torch.Generator().manual_seed(1)))  # seeded, reproducible
    off = p.clone()
    off[:, 4:8] = 0
    assert torch.equal(strong_augment(x, off), x)  # no operation drawn: the identity
    sol = off.clone()
    sol[:, 7] = 1
    assert torch.equal(strong_augment(x, sol), torch.where(x >= 0.5, 1 - x, x))
    gray = off.clone()
    gray[:, 5] = 1
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(strong_augment(x, gray), luma[:, None].expand_as(x), atol=1e-6)
    bright = off.clone()
    bright[:, 4], bright[:, 1:4] = 1, torch.tensor([1.0, 1.0, 0.0])
    assert torch.allclose(strong_augment(x, bright), (x * p[:, :1, None, None]).clamp(0, 1), atol=1e-6)


def test_conmim_projector_is_a_three_layer_mlp_with_batch_norm():
    linears = [m for m in _model("conmim").projector.modules() if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(32, 128), (128, 128), (128, 32)]
    assert all(l.bias is None for l in linears)


# ---- MAE ---------------------------------------------------------------------------------
def _mae_numpy_sincos(grid, dim):
    """facebookresearch/mae util/pos_embed.py get_2d_sincos_pos_embed, re-derived in numpy."""

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    g = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))  # w first
    return np.concatenate([one_d(dim // 2, g[0]), one_d(dim // 2, g[1])], axis=1)


@pytest.mark.parametrize("method", ["mae", "bootmae"])
def test_mae_position_embedding_is_fixed_sincos(method):
    model = _model(method)
    pos = model.encoder.pos_embed
    assert not pos.requires_grad
    assert torch.equal(pos[0, 0], torch.zeros(32))  # the class token's position
    assert np.allclose(pos[0, 1:].numpy(), _mae_numpy_sincos(8, 32), atol=1e-6)
    assert torch.allclose(model.decoder.pos_embed[0], sincos_position_embedding(8, 64))
    before = pos.detach().clone()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=0.1)
    model(*_batch(model))["loss"].backward()
    opt.step()
    assert torch.equal(model.encoder.pos_embed, before)


def _neighbour_weights_by_hand(mask, grid):
    """BootMAE's --weight_mask per patch: 1 + (masked patches among the 3x3 around it, itself included) / 9."""
    m = mask.view(-1, grid, grid).float()
    out = torch.zeros_like(m)
    for i in range(grid):
        for j in range(grid):
            around = m[:, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].sum((1, 2))
            out[:, i, j] = m[:, i, j] * (1 + around / 9)
    return out.flatten(1)


# ---- weight decay ------------------------------------------------------------------------
# The authors' skip lists beside 1-D parameters and biases: SimMIM's, BootMAE's, ConMIM's and DTM's
# no_weight_decay() is {pos_embed, cls_token}; MAE passes none (docs/baselines.md).
AUTHORS_SKIP = {
    "simmim": {"encoder.cls_token", "encoder.pos_embed"},
    "mae": set(),
    "bootmae": {"encoder.cls_token", "encoder.pos_embed"},
    "conmim": {"encoder.cls_token", "encoder.pos_embed"},
    "dtm": {"encoder.cls_token", "encoder.pos_embed"},
}


@pytest.mark.parametrize("pos_embed", ["abs", "rel_bias"])
@pytest.mark.parametrize("method", METHODS)
def test_weight_decay_groups_are_the_authors(method, pos_embed):
    model = _model(method, model={"pos_embed": pos_embed, "layer_scale": 0.1})
    decayed, rest = param_groups(model, 0.05)
    assert decayed["weight_decay"] == 0.05 and rest["weight_decay"] == 0.0
    name = {id(p): n for n, p in model.named_parameters()}
    dec, exempt = {name[id(p)] for p in decayed["params"]}, {name[id(p)] for p in rest["params"]}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert dec | exempt == set(trainable) and not dec & exempt
    matrices = {
        n
        for m_name, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
        for n in [f"{m_name}.weight"]
        if n in trainable
    }
    assert matrices <= dec  # every weight matrix and kernel decays
    assert {
        n for n in trainable if n.endswith(".bias") or ".norm" in n or "gamma" in n
    } <= exempt  # biases, gains, LayerScale
    assert any(n.endswith("ls1.gamma") for n in exempt)
    mask_tokens = {n for n in trainable if n.endswith("mask_token")}
    assert mask_tokens and mask_tokens <= dec  # every authors' optimiser decays the mask token
    assert ("encoder.cls_token" in dec) == (method == "mae")  # only MAE's decays the class token too
    assert AUTHORS_SKIP[method] & set(trainable) <= exempt
    if pos_embed == "rel_bias":  # a 2-D table, in no skip list: decayed, as in SimMIM's, ConMIM's and DTM's ViT
        assert "encoder.shared_rel_pos.relative_position_bias_table" in dec
    elif method in ("simmim", "conmim", "dtm"):
        assert "encoder.pos_embed" in exempt  # learnt here; the authors' skip list names it
    else:
        assert "encoder.pos_embed" not in trainable  # MAE's and BootMAE's is fixed sin-cos


def test_trainer_optimises_with_the_weight_decay_groups():
    cfg = TrialConfig(
        data=DataConfig(max_train=64),
        model=ModelConfig(embed_dim=32, depth=2, num_heads=2),
        mim=MIMConfig(method="mae"),
        train=TrainConfig(epochs=1, batch_size=32, weight_decay=0.1, warmup_epochs=1),
        eval=EvalConfig(every=1, hetero_batch=8),
    )
    trainer = Trainer(cfg)
    decays = [g["weight_decay"] for g in trainer.optimizer.param_groups]
    assert decays == [0.1, 0.0]
    cls = trainer.model.encoder.cls_token  # MAE's authors decay it
    assert any(p is cls for p in trainer.optimizer.param_groups[0]["params"])
    assert trainer.model.total_steps == 2


# ---- DTM ---------------------------------------------------------------------------------
def _count(groups: torch.Tensor) -> int:
    """The groups of a ``morph_groups`` result (its rows that hold a token), the same in every image."""
    counts = (groups.sum(-1) > 0).sum(1)
    assert torch.all(counts == counts[0])
    return int(counts[0])


@pytest.mark.parametrize("seed", range(5))
def test_dtm_with_the_authors_matching_never_merges_the_first_patch(seed):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(3, 16, 6, generator=g)
    tokens[:, 0] = tokens[:, 1]  # its twin is right beside it: unprotected, it would merge at once
    for merges, iterations in ((16, 1), (3, 4), (7, 2)):
        groups = morph_groups(tokens, merges, iterations, protect_first=True)
        first = groups[:, :, 0].argmax(dim=1)  # the group of patch 0
        assert torch.all(groups[torch.arange(3), first].sum(-1) == 1)  # alone in it
    assert _count(morph_groups(tokens, 16, 1, protect_first=True)) == 16 - 15 // 2  # r capped at (N - 1) // 2
    assert _count(morph_groups(tokens, 16, 1)) == 8
    free = morph_groups(tokens, 1, 1)  # unprotected, one merge: patch 0 and its twin
    assert torch.all(free[torch.arange(3), free[:, :, 0].argmax(dim=1)].sum(-1) == 2)
    assert MIMConfig(method="dtm").dtm_protect_first  # the authors' call: class_token=True


def test_dtm_with_zero_merges_is_the_identity():
    t = torch.randn(2, 9, 5)
    groups = morph_groups(t, 0, 3)
    assert torch.equal(groups, torch.eye(9).expand(2, 9, 9))
    pred = torch.randn(2, 9, 5)
    assert torch.equal(group_average(pred, groups), pred)
    assert torch.allclose(morphed_loss(pred, t, groups, False), F.smooth_l1_loss(pred, t, beta=2.0))


@pytest.mark.parametrize("r,k", [(1, 1), (3, 2), (4, 5), (16, 1)])
def test_dtm_groups_partition_the_tokens(r, k):
    groups = morph_groups(torch.randn(3, 16, 4), r, k)
    assert set(groups.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(groups.sum(1), torch.ones(3, 16))  # every token in exactly one group
    expected = 16
    for _ in range(k):
        expected -= min(r, expected // 2)
    assert groups.shape == (3, 16, 16) and _count(groups) == expected  # static shape: empty rows for merged places


def _brute_force_groups(tokens, r, iterations):
    """ToMe by hand: lists of (members, summed feature, size), A = even places, B = odd places."""
    items = [([i], tokens[i].double(), 1.0) for i in range(tokens.shape[0])]
    for _ in range(iterations):
        a, b = items[0::2], items[1::2]
        r_now = min(r, len(items) // 2)
        if r_now == 0:
            break
        best = []
        for ia, (_, sa, na) in enumerate(a):
            sims = [F.cosine_similarity(sa / na, sb / nb, dim=0).item() for _, sb, nb in b]
            best.append((max(sims), ia, int(np.argmax(sims))))
        best.sort(key=lambda e: -e[0])
        b = [list(x) for x in b]
        for _, ia, ib in best[:r_now]:
            b[ib][0] = b[ib][0] + a[ia][0]
            b[ib][1] = b[ib][1] + a[ia][1]
            b[ib][2] = b[ib][2] + a[ia][2]
        items = [a[ia] for _, ia, _ in best[r_now:]] + [tuple(x) for x in b]
    return sorted(sorted(m) for m, _, _ in items)


@pytest.mark.parametrize("r,iterations", [(2, 1), (2, 3), (3, 2)])
def test_dtm_matching_equals_a_brute_force_computation(r, iterations):
    tokens = torch.randn(1, 10, 4, generator=torch.Generator().manual_seed(r * 10 + iterations))
    groups = morph_groups(tokens, r, iterations)[0]
    found = sorted(sorted(torch.nonzero(row).flatten().tolist()) for row in groups if row.any())
    assert found == _brute_force_groups(tokens[0], r, iterations)
    as_tensors = morph_groups(tokens, torch.tensor(r), torch.tensor(iterations), max_iterations=iterations + 2)[0]
    assert torch.equal(as_tensors, groups)  # draws as tensors, extra rounds past them: the same groups
    src, dst, _ = bipartite_matching(tokens, r)
    cos = F.cosine_similarity(tokens[0, ::2, None], tokens[0, None, 1::2], dim=-1)
    assert torch.equal(dst[0], cos.argmax(-1)[src[0]])


def test_dtm_loss_equals_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 8, 6, generator=g), torch.randn(2, 8, 6, generator=g)
    groups = morph_groups(target, 3, 2)
    total, count = 0.0, 0
    for b in range(2):
        for row in groups[b][groups[b].any(-1)]:  # the rows that hold a group
            members = row.nonzero().flatten()
            p, t = pred[b, members].mean(0), target[b, members].mean(0)
            t = (t - t.mean()) / (t.var() + 1e-6).sqrt()
            d = (p - t).abs()
            per = torch.where(d < 2.0, 0.5 * d**2 / 2.0, d - 1.0).sum()
            total, count = total + per * len(members), count + len(members) * 6
    assert torch.allclose(morphed_loss(pred, target, groups, True), total / count, atol=1e-6)


def test_dtm_draws_follow_the_authors_rule_and_leave_the_trainers_randomness_alone():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        r, k = draw_morphing(g, 64, 8)
        assert 1 <= k <= 8 and 0 <= r * k <= 64
    cfg = TrialConfig(
        data=DataConfig(max_train=64),
        model=ModelConfig(embed_dim=32, depth=2, num_heads=2),
        mim=MIMConfig(method="dtm"),
        train=TrainConfig(epochs=1, batch_size=32, warmup_epochs=1),
        eval=EvalConfig(every=1, hetero_batch=8),
    )
    trainer = Trainer(cfg)
    gen, rng = trainer.generator.get_state(), torch.get_rng_state()
    trainer.step(*trainer.fixed_batch(8))
    assert torch.equal(trainer.generator.get_state(), gen) and torch.equal(torch.get_rng_state(), rng)


def test_dtm_frozen_teacher_is_loaded_from_a_local_checkpoint_and_never_updated(tmp_path):
    source = _model("dtm", seed=5)
    path = tmp_path / "teacher.pt"
    torch.save(source.encoder.state_dict(), path)
    model = _model("dtm", dtm_teacher=str(path))
    for a, b in zip(model.teacher.parameters(), source.encoder.parameters()):
        assert torch.equal(a, b) and not a.requires_grad
    before = [p.clone() for p in model.teacher.parameters()]
    model(*_batch(model))["loss"].backward()
    model.on_step_end()
    assert all(torch.equal(a, b) for a, b in zip(before, model.teacher.parameters()))
    assert not model.teacher.training
    with pytest.raises(ConfigError, match="mim.dtm_teacher"):
        _model("dtm", dtm_teacher=str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="mim.dtm_teacher"):
        MIMConfig(method="simmim", dtm_teacher=str(path))


@pytest.mark.parametrize(
    "field,value",
    [
        ("strong_jitter", [0.4, 0.4, 0.2]),
        ("strong_jitter", [0.4, 0.4, 0.2, 0.6]),
        ("strong_blur_prob", 1.5),
        ("projector_depth", 0),
        ("dtm_draws", 0),
        ("dtm_max_merges", 0),
        ("momentum", 1.0),
        ("feature_weight_ramp_epochs", -1),
        ("context_blocks", [0]),
    ],
)
def test_bad_recipe_settings_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"mim.{field}"):
        MIMConfig(method="dtm", **{field: value})
