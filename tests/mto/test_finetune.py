"""Fine-tuning evaluation (mto.training.finetune, eval.finetune): the recipe's parts on real timm models, and its
place in a trial: pre-training untouched, results at the right epochs, resume in the middle."""

import dataclasses
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from mto import ConfigError, NonFiniteLossError, run_trial
from mto.data.datasets import load_data
from mto.methods.backbone import create_vit
from mto.training.finetune import classifier, finetune, optimizer, set_lr
from mto.training.unit import run_unit


def _with(cfg, **sections):
    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), **v) for k, v in sections.items()})


def _finetuning(cfg, **ft):
    """``cfg`` with fine-tuning on: 1 epoch by default (the wiring, not the accuracy, is under test)."""
    settings = {"enabled": True, "epochs": 1, "warmup_epochs": 0, "batch_size": 64, **ft}
    return _with(cfg, eval={"finetune": dataclasses.replace(cfg.eval.finetune, **settings)})


def _pretraining(history):
    """A history without its fine-tuning results and timings."""
    return [{k: v for k, v in h.items() if not k.startswith(("finetune/", "val/finetune", "perf/"))} for h in history]


def test_layer_decay_gives_each_block_base_lr_times_decay_to_the_depth_minus_its_index(tiny_config):
    cfg = _finetuning(_with(tiny_config, model={"depth": 3}), layer_decay=0.6, weight_decay=0.05)
    encoder = create_vit(cfg.model, img_size=16, in_chans=1)
    vit = classifier(encoder, cfg, num_classes=10)
    opt = optimizer(vit, cfg)
    set_lr(opt, 1e-3)
    lr = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert len(lr) == len(list(vit.parameters()))  # every parameter is fine-tuned
    for i, block in enumerate(vit.blocks):
        for p in block.parameters():
            assert lr[id(p)] == pytest.approx(1e-3 * 0.6 ** (3 - i), rel=1e-12)
    assert lr[id(vit.head.weight)] == pytest.approx(1e-3)
    assert (
        lr[id(vit.norm.weight)] == lr[id(vit.blocks[-1].mlp.fc2.weight)]
    )  # timm groups the final norm with the last block
    assert lr[id(vit.patch_embed.proj.weight)] == lr[id(vit.pos_embed)] == pytest.approx(1e-3 * 0.6**4)
    assert decay[id(vit.head.weight)] == decay[id(vit.blocks[0].attn.qkv.weight)] == 0.05
    assert decay[id(vit.head.bias)] == decay[id(vit.norm.weight)] == decay[id(vit.pos_embed)] == 0.0


def test_the_classifier_starts_from_the_encoders_weights_and_leaves_them_alone(tiny_config):
    cfg = _finetuning(tiny_config)
    encoder = create_vit(cfg.model, img_size=16, in_chans=1)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    vit = classifier(encoder, cfg, num_classes=10)
    assert all(torch.equal(vit.state_dict()[k], v) for k, v in before.items())
    assert vit.head.weight.abs().max() < 1e-4  # MAE's head initialisation, N(0, 2e-5)
    data = load_data(cfg.data)
    finetune(cfg, encoder, data, from_epoch=0, autocast=nullcontext())
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in before.items())


def test_finetuning_on_digits_lowers_its_loss_and_beats_chance(tiny_config):
    cfg = _finetuning(_with(tiny_config, data={"max_train": None}), epochs=12, warmup_epochs=1, base_lr=3e-2)
    encoder = create_vit(cfg.model, img_size=16, in_chans=1)
    metrics, curve = finetune(cfg, encoder, load_data(cfg.data), from_epoch=0, autocast=nullcontext())
    assert len(curve) == 12 and curve[-1] < curve[0] - 0.2, curve
    assert metrics["finetune/top1"] > 0.25 and metrics["val/finetune_top1"] > 0.25, metrics  # chance: 0.10
    assert metrics["finetune/train_loss"] == curve[-1]


@pytest.mark.parametrize("mixing", [{"mixup": 0.8, "cutmix": 1.0}, {"label_smoothing": 0.0, "drop_path": 0.0}])
def test_finetuning_draws_leave_the_global_generators_as_they_were(tiny_config, mixing):
    cfg = _finetuning(tiny_config, **mixing)
    encoder = create_vit(cfg.model, img_size=16, in_chans=1)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    metrics, curve = finetune(cfg, encoder, load_data(cfg.data), from_epoch=3, autocast=nullcontext())
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state))
    assert np.isfinite(curve).all() and 0 <= metrics["finetune/top1"] <= 1


def test_the_pretraining_curve_is_bit_identical_with_and_without_finetuning(tiny_config):
    plain = run_trial(_with(tiny_config, train={"epochs": 2}))
    tuned = run_trial(_finetuning(_with(tiny_config, train={"epochs": 2}), at=[0, 2], drop_path=0.1))
    assert _pretraining(tuned.history) == _pretraining(plain.history)
    assert tuned.curve("finetune/top1")[0] == [0, 2] and tuned.curve("val/finetune_top1")[0] == [0, 2]
    assert "finetune/top1" not in plain.history[-1]


def test_finetuning_reports_follow_their_epochs_report_which_carries_a_checkpoint(tiny_config):
    reports = []
    run_trial(_finetuning(_with(tiny_config, train={"epochs": 3, "checkpoint_every": 5}), at=[1, 3]), reports.append)
    assert [(r.epoch, r.phase) for r in reports] == [
        (0, "train"),
        (1, "train"),
        (1, "finetune"),
        (2, "train"),
        (3, "train"),
        (3, "finetune"),
    ]
    assert [r.epoch for r in reports if r.checkpoint is not None] == [1, 1, 3, 3]  # epoch 1: due for fine-tuning
    tuned = [r for r in reports if r.phase == "finetune"]
    assert all(
        set(r.metrics) == {"finetune/top1", "val/finetune_top1", "finetune/train_loss", "finetune/seconds"}
        for r in tuned
    )
    assert all(r.arrays["finetune_loss"].shape == (1,) for r in tuned)
    assert not any(k.startswith("finetune/") for r in reports if r.phase == "train" for k in r.metrics)


def test_a_trial_stopped_before_its_finetuning_resumes_with_it_and_trains_no_epoch_twice(tiny_config):
    cfg = _finetuning(_with(tiny_config, train={"epochs": 2}), at=[1, 2])
    whole = []
    run_trial(cfg, whole.append)
    saved = []

    def stop_at_epoch_1(r):
        saved.append(r.checkpoint)
        if r.epoch == 1:
            raise KeyboardInterrupt  # the worker stops after the checkpoint, before (or while) fine-tuning

    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, stop_at_epoch_1)
    resumed = []
    result = run_trial(cfg, resumed.append, resume=saved[-1])
    assert [(r.epoch, r.phase) for r in resumed] == [(1, "finetune"), (2, "train"), (2, "finetune")]
    for a, b in zip(whole[2:], resumed):  # the same fine-tuning results, the same pre-training
        assert {k: v for k, v in a.metrics.items() if "seconds" not in k and "perf/" not in k} == {
            k: v for k, v in b.metrics.items() if "seconds" not in k and "perf/" not in k
        }
    assert [h["epoch"] for h in result.history] == [0, 1, 2]


def test_finetuning_epochs_outside_training_and_a_diverging_finetuning_are_refused(tiny_config):
    with pytest.raises(ConfigError, match=r"eval\.finetune\.at.*outside the training"):
        _finetuning(_with(tiny_config, train={"epochs": 2}), at=[1, 3])
    with pytest.raises(ConfigError, match=r"eval\.finetune\.batch_size.*at most the 256 training images"):
        run_trial(_finetuning(_with(tiny_config, train={"epochs": 1}), batch_size=512))
    with pytest.raises(NonFiniteLossError, match="fine-tuning loss"):
        run_trial(_finetuning(_with(tiny_config, train={"epochs": 1}), base_lr=1e30))


def test_a_fused_unit_finetunes_each_member_as_it_would_alone(tiny_config):
    base = _finetuning(_with(tiny_config, train={"epochs": 2}, mto={"lambda_e": 0.1}))
    configs = [base, _with(base, train={"seed": 1, "base_lr": 1e-3})]
    data = load_data(base.data)
    alone = [run_trial(c, data=data).history[-1] for c in configs]
    seen = []
    fused = run_unit(
        configs, lambda reports, failures: seen.append(sorted((r.epoch, r.phase) for r in reports.values())), data=data
    )
    assert seen[-1] == [(2, "finetune")] * 2 and seen[-2] == [(2, "train")] * 2
    for solo, member in zip(alone, fused):
        for key in ("finetune/top1", "val/finetune_top1"):  # fused weights differ from solo ones by rounding only
            assert member.history[-1][key] == pytest.approx(solo[key], abs=0.03)
