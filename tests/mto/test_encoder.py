"""A trial's encoder kept as timm's own files (mto.training.encoder): loaded by timm alone or by mto, it gives the
trial's own features, every weight under timm's names; fine-tuned from the file, it gives what the trial's own
fine-tuning gave; a file that is no encoder, or one whose weights do not fit its architecture, is refused in one
line."""

import dataclasses
import json

import pytest
import timm
import torch
from timm.models import load_state_dict

from mto import ConfigError, finetune_encoder, load_encoder, run_trial, save_encoder
from mto.config import DataConfig, EvalConfig, FinetuneConfig, MIMConfig, ModelConfig, TrainConfig, TrialConfig
from mto.data.datasets import load_data, normalize
from mto.methods import registry
from mto.methods.base import build_model

HEAD = ["head.bias", "head.weight"]  # sorted


def _config(method="simmim", pos_embed="abs", **eval_) -> TrialConfig:
    """One epoch (two steps of 16 images) of a 2-block ViT of width 32, probes off."""
    return TrialConfig(
        data=DataConfig(max_train=32),
        model=ModelConfig(embed_dim=32, depth=2, num_heads=2, pos_embed=pos_embed),
        mim=MIMConfig(method=method),
        train=TrainConfig(epochs=1, batch_size=16, warmup_epochs=0),
        eval=EvalConfig(every=1, linear=False, knn=False, hetero_batch=8, **eval_),
    )


def _trained(cfg: TrialConfig):
    """The trial's last checkpoint and history."""
    states = []
    result = run_trial(cfg, lambda r: states.append(r.checkpoint))
    return states[-1], result.history


def _images(cfg: TrialConfig) -> torch.Tensor:
    data = load_data(cfg.data)
    return normalize(data.test_x[:8], data.mean, data.std)


@pytest.mark.parametrize(
    "method,pos_embed",
    [(m, "abs") for m in registry.names()] + [("conmim", "rel_bias"), ("mae", "none")],
)
def test_the_kept_encoder_gives_the_trials_own_features_loaded_by_timm_alone_or_by_mto(tmp_path, method, pos_embed):
    cfg = _config(method, pos_embed)
    state, _ = _trained(cfg)
    folder = save_encoder(cfg, state, tmp_path / "encoder", study="s", trial="t-s0")
    trial = build_model(cfg, in_chans=1)
    trial.load_state_dict(state["model"])
    x = _images(cfg)
    with torch.no_grad():
        own = trial.eval().features(x)  # the online encoder's, not a momentum copy's
        assert torch.allclose(load_encoder(folder).eval()(x), own, atol=1e-6)
        with_head = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=10).eval()
        assert torch.allclose(with_head.forward_head(with_head.forward_features(x), pre_logits=True), own, atol=1e-6)
        assert with_head(x).shape == (8, 10)
    config = json.loads((folder / "config.json").read_text())
    fresh = timm.create_model(config["architecture"], **{**config["model_args"], "num_classes": 10})
    loaded = fresh.load_state_dict(load_state_dict(str(folder / "model.safetensors")), strict=False)
    assert sorted(loaded.missing_keys) == HEAD and loaded.unexpected_keys == []  # the backbone, nothing else
    about = config["mto"]
    assert (about["method"], about["epoch"], about["study"], about["trial"], about["data"]) == (
        method,
        1,
        "s",
        "t-s0",
        "digits",
    )
    assert config["model_args"]["img_size"] == [16, 16] and config["model_args"]["patch_size"] == 2
    assert config["pretrained_cfg"]["input_size"] == [1, 16, 16] and len(config["pretrained_cfg"]["mean"]) == 1


def test_timms_file_overlay_loads_it_too_and_finetuning_the_file_repeats_the_trials_own_finetuning(tmp_path):
    finetuning = FinetuneConfig(enabled=True, epochs=1, warmup_epochs=0, batch_size=16)
    cfg = _config("simmim", "rel_bias", finetune=finetuning)
    state, history = _trained(cfg)
    folder = save_encoder(cfg, state, tmp_path / "encoder", study="s", trial="t")
    config = json.loads((folder / "config.json").read_text())
    overlay = dict(file=str(folder / "model.safetensors"))
    args = {**config["model_args"], "num_classes": 10}
    vit = timm.create_model(config["architecture"], pretrained=True, pretrained_cfg_overlay=overlay, **args).eval()
    x = _images(cfg)
    with torch.no_grad():
        assert torch.allclose(vit.forward_head(vit.forward_features(x), pre_logits=True), load_encoder(folder)(x))
    metrics, curve = finetune_encoder(folder, dataclasses.replace(cfg, model=ModelConfig()))  # the file's model
    assert metrics["finetune/top1"] == history[-1]["finetune/top1"] and len(curve) == 1
    assert metrics["val/finetune_top1"] == history[-1]["val/finetune_top1"]


def test_no_encoder_a_broken_file_and_weights_of_another_architecture_are_refused_in_one_line(tmp_path):
    cfg = _config()
    state, _ = _trained(cfg)
    drawn = torch.get_rng_state()
    folder = save_encoder(cfg, state, tmp_path / "encoder")
    assert torch.equal(torch.get_rng_state(), drawn)  # saving draws nothing of the caller's (a trial may go on)
    with pytest.raises(ConfigError, match=r"^encoder='.*nowhere' is invalid: a folder with model.safetensors and"):
        load_encoder(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ConfigError, match=r"no config.json in .*half"):
        load_encoder(tmp_path / "half" / "model.safetensors")
    (tmp_path / "half" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="a config.json as timm writes it"):
        load_encoder(tmp_path / "half")
    (tmp_path / "half" / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ConfigError, match="weights that fit vit_tiny_patch16_224"):
        load_encoder(tmp_path / "half")
    config = json.loads((folder / "config.json").read_text())
    config["model_args"]["depth"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"weights that fit .*\"depth\": 3.*Missing key") as err:
        load_encoder(folder)
    assert "\n" not in str(err.value)
    config["model_args"]["depth"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    bigger = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=32))
    with pytest.raises(ConfigError, match=r"^data.image_size=32 is invalid: 16, the size the encoder was trained at"):
        finetune_encoder(folder, bigger)
    other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, depth=3))
    with pytest.raises(ConfigError, match=r"^model="):
        save_encoder(other, state, tmp_path / "other")
