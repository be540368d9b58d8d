import copy
import dataclasses

import numpy as np
import pytest

from mto import ConfigError, NonFiniteLossError, run_trial


def _with(cfg, **sections):
    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), **v) for k, v in sections.items()})


def test_short_training_lowers_reconstruction_loss_and_logs_probes_every_eval(tiny_config):
    cfg = _with(tiny_config, train={"epochs": 4}, eval={"every": 2, "affinity_epochs": [4]})
    reports = []
    result = run_trial(cfg, reports.append)
    losses = [h["train/loss_mim"] for h in result.history if "train/loss_mim" in h]
    assert losses[-1] < losses[0]
    assert [r.epoch for r in reports] == [0, 1, 2, 3, 4]  # epoch 0: the untrained model, evaluated
    probed = [r.epoch for r in reports if "eval/linear_top1" in r.metrics and "eval/knn_top1" in r.metrics]
    assert probed == [0, 2, 4] and result.curve("val/linear_top1")[0] == [0, 2, 4]
    assert all(
        0.0 <= r.metrics[k] <= 1.0
        for r in reports
        if r.epoch in probed
        for k in ("eval/linear_top1", "val/linear_top1", "val/knn_top1")
    )
    assert all(f"hetero/l{l:02d}" in r.metrics for r in reports for l in range(3))
    assert not [k for k in reports[0].metrics if k.startswith("train/")] and reports[0].checkpoint is None
    assert {"perf/img_per_s", "perf/epoch_s", "train/loss_e"} <= set(reports[1].metrics)
    assert result.affinity[4].shape == (3, 64, 64)
    assert np.allclose(result.affinity[4].sum(-1), 1.0, atol=1e-4)


def test_same_seed_gives_the_same_curve_on_cpu(tiny_config):
    cfg = _with(tiny_config, train={"epochs": 2})
    a, b = run_trial(cfg).history, run_trial(cfg).history
    drop = lambda h: {k: v for k, v in h.items() if not k.startswith("perf/")}
    assert [drop(h) for h in a] == [drop(h) for h in b]
    c = run_trial(_with(cfg, train={"seed": 1})).history
    assert a[-1]["train/loss"] != c[-1]["train/loss"]


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(tiny_config):
    cfg = _with(tiny_config, mim={"method": "mae"}, mto={"lambda_e": 0.1, "lambda_r": 0.1})
    full = run_trial(cfg).history
    saved = {}

    def killed_after_epoch_2(r):
        saved[r.epoch] = copy.deepcopy(r.checkpoint)  # the state is live: a real caller saves it at once
        if r.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, killed_after_epoch_2)
    reported = []
    resumed = run_trial(cfg, reported.append, resume=saved[1]).history
    assert [r.epoch for r in reported] == [2, 3]  # epoch 0 is in the checkpoint's history, not reported again
    assert [h.get("train/loss") for h in resumed] == [h.get("train/loss") for h in full]
    assert resumed[-1]["eval/linear_top1"] == full[-1]["eval/linear_top1"]


def test_non_finite_loss_raises(tiny_config):
    with pytest.raises(NonFiniteLossError, match="epoch 1"):
        run_trial(_with(tiny_config, train={"base_lr": 1e30, "epochs": 1}))


def test_batch_larger_than_the_data_set_is_refused_before_training(tiny_config):
    with pytest.raises(ConfigError, match="train.batch_size"):
        run_trial(_with(tiny_config, data={"max_train": 10}))


@pytest.mark.parametrize(
    "mim, mto",
    [
        ({"method": "simmim"}, {"recalibration": "hard", "lambda_e": 0.1}),
        (
            {"method": "simmim"},
            {"recalibration": "soft", "lambda_spa": 0.1, "lambda_schedule": "linear_warmup", "lambda_warmup_epochs": 1},
        ),
        (
            {"method": "mae", "decoder_depth": 2},
            {"lambda_e": 0.1, "lambda_r": 0.1, "affinity": "attention", "layers_e": [1], "layers_r": [1, 2]},
        ),
    ],
)
def test_mto_variants_train(tiny_config, mim, mto):
    cfg = _with(tiny_config, train={"epochs": 1}, eval={"every": 1}, mim=mim, mto=mto)
    _, h = run_trial(cfg).history
    assert np.isfinite(h["train/loss"]) and "eval/linear_top1" in h


def test_probe_on_a_data_set_without_labels_is_refused_before_training(tiny_config, tmp_path):
    from PIL import Image

    for split in ("train", "val"):  # one class folder: images, but no labels to probe
        (tmp_path / split / "all").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (i * 60, 0, 0)).save(tmp_path / split / "all" / f"{i}.png")
    cfg = _with(
        tiny_config, data={"name": "imagefolder", "path": str(tmp_path), "max_train": None}, train={"batch_size": 2}
    )
    with pytest.raises(ConfigError, match="eval.knn=True is invalid: the probes need labels"):
        run_trial(cfg)
    _, h = run_trial(_with(cfg, eval={"linear": False, "knn": False}, train={"batch_size": 2, "epochs": 1})).history
    assert "eval/linear_top1" not in h and np.isfinite(h["train/loss"])


def test_every_curve_starts_at_epoch_0(tiny_config):
    result = run_trial(_with(tiny_config, train={"epochs": 2}, eval={"every": 2}))
    for metric in ("eval/linear_top1", "eval/knn_top1", "val/linear_top1", "hetero/l00"):
        assert result.curve(metric)[0][0] == 0, metric
    assert result.curve("train/loss")[0] == [1, 2]


def test_compile_is_optional_and_off_on_cpu_by_default(tiny_config):
    from mto.training.trainer import Trainer

    assert tiny_config.train.compile == "auto"
    trainer = Trainer(_with(tiny_config, train={"device": "cpu"}))
    assert not trainer.train_step.compiled  # auto: compiled on CUDA only
    with pytest.raises(ConfigError, match="train.compile"):
        _with(tiny_config, train={"compile": "yes"})


def test_no_feature_pass_when_every_probe_is_off(tiny_config):
    """Nothing runs per epoch that no setting asked for: with both probes off, no epoch (0 included) encodes the
    training or test images."""
    from mto.training.trainer import Trainer

    trainer = Trainer(_with(tiny_config, eval={"linear": False, "knn": False}))
    encoded: list[int] = []
    features = trainer.features
    trainer.features = lambda images, chunk=512: encoded.append(len(images)) or features(images, chunk)
    start = trainer.start_report()
    assert encoded == [] and not any(k.startswith(("eval/", "val/")) for k in start.metrics)
    assert "hetero/l00" in start.metrics  # the layer profile still runs: it is asked for (hetero_batch)
