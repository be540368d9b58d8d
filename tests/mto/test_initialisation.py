"""Where every parameter starts, per method and backbone, against the authors' rules re-typed here from their code
(docs/baselines.md cites the lines): the distribution's bound and standard deviation over each tensor, which
tensors are zero or one, BEiT's depth rescaling. Every parameter of every model must match a rule, so a timm
upgrade that changes its defaults, or a new parameter nobody initialised on purpose, fails here."""

import math
import re

import pytest
import torch
from torch import nn

from mto.config import DataConfig, MIMConfig, ModelConfig, TrialConfig
from mto.methods.base import build_model

D, DEPTH, HEADS, PATCH, SIZE, C = 96, 3, 3, 4, 32, 3  # large enough tensors for their statistics
DEC = 64  # the MAE-family decoder width (MIMConfig's default)
LAYER_SCALE = 0.1  # the authors' backbone (rel_bias) scales each block's branches from 0.1 (BEiT's init_values)
TRUNC_SD = math.sqrt(1 - 2 * math.exp(-0.5) / math.sqrt(2 * math.pi) / math.erf(1 / math.sqrt(2)))  # N(0,1) in +-1


def _model(method: str, pos_embed: str) -> nn.Module:
    torch.manual_seed(0)
    cfg = TrialConfig(
        data=DataConfig(image_size=SIZE),
        model=ModelConfig(
            patch_size=PATCH,
            embed_dim=D,
            depth=DEPTH,
            num_heads=HEADS,
            pos_embed=pos_embed,
            layer_scale=LAYER_SCALE if pos_embed == "rel_bias" else None,
        ),
        mim=MIMConfig(method=method),
    )
    return build_model(cfg, in_chans=C)


def _spread(t: torch.Tensor, bound: float | None, sd: float) -> None:
    """``t`` lies within +-``bound`` (None: not bounded) with standard deviation ``sd`` (within its sampling error)."""
    t = t.detach().double().flatten()
    tolerance = 5 / math.sqrt(t.numel())  # the relative sampling error of a standard deviation is about 1/sqrt(2n)
    assert abs(t.std().item() / sd - 1) < tolerance, (t.std().item(), sd, t.numel())
    assert abs(t.mean().item()) < 5 * sd / math.sqrt(t.numel())
    if bound is not None:
        assert t.abs().max().item() <= bound * (1 + 1e-6), (t.abs().max().item(), bound)
    elif t.numel() >= 100:
        assert t.abs().max().item() > 2 * sd  # not cut short: a plain normal


def beit(t, scale=1.0):
    _spread(t, 0.02 * scale, 0.02 * scale * TRUNC_SD)  # N(0, 0.02) truncated at +-0.02 (BEiT's a=-std, b=std)


def xavier(t, fan_in, fan_out):
    bound = math.sqrt(6 / (fan_in + fan_out))
    _spread(t, bound, bound / math.sqrt(3))


def uniform(t, bound):  # PyTorch's default for a layer the authors leave as constructed
    _spread(t, bound, bound / math.sqrt(3))


def normal(t, std):
    _spread(t, None, std)


def zeros(t):
    assert torch.all(t == 0)


def ones(t):
    assert torch.all(t == 1)


def _encoder(scheme: str, name: str, p: torch.Tensor) -> None:
    """The rule of an encoder parameter under ``scheme``: beit (SimMIM, ConMIM, DTM), xavier (MAE), moco_v3
    (BootMAE)."""
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    block, rest = (int(m.group(1)), m.group(2)) if m else (None, name)
    if rest.endswith("bias") and rest != "patch_embed.proj.bias" or rest.endswith("relative_position_bias_table"):
        return zeros(p)
    if "norm" in rest:
        return ones(p)
    if rest in ("ls1.gamma", "ls2.gamma"):  # BEiT: init_values * ones (the rel_bias models have layer scale)
        assert torch.all(p == LAYER_SCALE), name
        return None
    if name == "cls_token":
        return {"beit": beit, "xavier": lambda t: normal(t, 0.02), "moco_v3": lambda t: normal(t, 1e-6)}[scheme](p)
    if name == "pos_embed":  # beit: learnt; mae, bootmae: fixed sin-cos, not trained
        return beit(p) if scheme == "beit" else None if not p.requires_grad else pytest.fail("a learnt MAE position")
    if name == "patch_embed.proj.bias":
        return zeros(p) if scheme != "xavier" else uniform(p, 1 / math.sqrt(C * PATCH**2))
    if name == "patch_embed.proj.weight":
        return beit(p) if scheme == "beit" else xavier(p, C * PATCH**2, D)
    fans = {"attn.qkv.weight": (D, 3 * D), "attn.proj.weight": (D, D), "mlp.fc1.weight": (D, 4 * D)}
    fans["mlp.fc2.weight"] = (4 * D, D)
    assert rest in fans, name
    if scheme == "beit":
        return beit(p, 1 / math.sqrt(2 * (block + 1)) if rest in ("attn.proj.weight", "mlp.fc2.weight") else 1.0)
    if scheme == "moco_v3" and rest == "attn.qkv.weight":  # MoCo v3: q, k and v each their own matrix
        return [xavier(part, D, D) for part in p.chunk(3)]
    return xavier(p, *fans[rest])


def _decoder(name: str, p: torch.Tensor, bootmae: bool, pixels: bool) -> None:
    """The rule of a MAE-family decoder parameter (``decoder.*`` / ``feature_decoder.*`` without the prefix)."""
    out = C * PATCH**2 if pixels else D
    if name == "mask_token":
        return beit(p) if bootmae else normal(p, 0.02)
    if bootmae and pixels and name in ("pred.weight", "pred_bias"):  # a transposed convolution, PyTorch's own
        assert name != "pred_bias" or p.shape == (C,)  # one bias per channel, shared by a patch's pixels
        return uniform(p, 1 / math.sqrt(out))
    if name.endswith("bias"):
        return zeros(p)
    if "norm" in name:
        return ones(p)
    fans = {"embed.weight": (D, DEC), "pred.weight": (DEC, out)}
    m = re.fullmatch(r"blocks\.\d+\.(.+)", name)
    rest = m.group(1) if m else name
    fans.update({"attn.qkv.weight": (DEC, 3 * DEC), "attn.proj.weight": (DEC, DEC), "mlp.fc1.weight": (DEC, 4 * DEC)})
    fans["mlp.fc2.weight"] = (4 * DEC, DEC)
    assert rest in fans, name
    if bootmae and rest == "attn.qkv.weight":
        return [xavier(part, DEC, DEC) for part in p.chunk(3)]
    return xavier(p, *fans[rest])


def _method(method: str, name: str, p: torch.Tensor) -> None:
    """The rule of a parameter outside the encoder (and outside the copies of online modules)."""
    if name == "mask_token":
        return beit(p)
    if method == "simmim" and name.startswith("decoder.0."):  # a 1x1 convolution the authors leave as built
        return uniform(p, 1 / math.sqrt(D))
    if method == "conmim" and name.startswith("projector."):
        if p.ndim == 2:
            return beit(p)  # bias-free Linear layers, under the authors' model.apply(_init_weights)
        return ones(p) if name.endswith("weight") else zeros(p)  # BatchNorm
    if method == "dtm" and name.startswith("head."):
        return beit(p) if name.endswith("weight") else zeros(p)
    if method in ("mae", "bootmae"):
        for prefix, pixels in (("decoder.", True), ("feature_decoder.", False)):
            if name.startswith(prefix):
                return _decoder(name[len(prefix) :], p, method == "bootmae", pixels)
        if method == "bootmae" and name.startswith("cross_"):
            rest = name.split(".", 2)[2]
            fans = {"q.weight": (DEC, DEC), "kv.weight": (D, 2 * DEC), "proj.weight": (DEC, DEC)}
            if rest.startswith("norm"):
                return ones(p) if rest.endswith("weight") else zeros(p)
            return zeros(p) if rest.endswith("bias") else xavier(p, *fans[rest])  # kv as one matrix, as the authors'
    pytest.fail(f"no rule for {method} parameter {name}")


SCHEME = {"simmim": "beit", "conmim": "beit", "dtm": "beit", "mae": "xavier", "bootmae": "moco_v3"}
COPIES = {"momentum_encoder": "encoder", "momentum_projector": "projector", "teacher": "encoder"}


@pytest.mark.parametrize("pos_embed", ["abs", "rel_bias"])
@pytest.mark.parametrize("method", list(SCHEME))
def test_every_parameter_starts_as_its_authors_draw_it(method, pos_embed):
    model = _model(method, pos_embed)
    everything = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    named = dict(model.named_parameters())
    named.update({n: b for n, b in model.named_buffers() if n.startswith(tuple(COPIES))})
    checked = 0
    for name, p in named.items():
        head, _, rest = name.partition(".")
        if head in COPIES:  # a momentum copy or an EMA teacher starts equal to what it follows
            assert torch.equal(p, everything[f"{COPIES[head]}.{rest}"]), name
        elif head == "encoder":
            _encoder(SCHEME[method], rest, p)
        else:
            _method(method, name, p)
        checked += 1
    assert checked == len(named)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(m.eps == 1e-6 for m in norms)  # every author's LayerNorm, decoders and cross-attention too


def test_conmim_projector_batch_norm_takes_its_statistics_over_the_class_token_too():
    model = _model("conmim", "rel_bias").train()
    seen = []
    for projector in (model.projector, model.momentum_projector):
        projector.mlp[1].register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    images = torch.randn(4, C, SIZE, SIZE)
    model(images, model.sample_mask(4, None, images.device))
    assert seen == [4 * (1 + (SIZE // PATCH) ** 2)] * 2  # every token of every image, the class token included


def test_bootmae_pixel_head_has_one_bias_per_channel_shared_by_every_pixel_of_a_patch():
    decoder = _model("bootmae", "abs").decoder
    with torch.no_grad():
        decoder.pred.weight.zero_()
        decoder.pred_bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    out = decoder.head(torch.randn(2, 1 + (SIZE // PATCH) ** 2, DEC))
    assert torch.equal(out, torch.tensor([1.0, 2.0, 3.0]).repeat(PATCH**2).expand_as(out))  # patchify: channel last
