"""Fused trials (mto.training.unit): K trials trained as one stacked model give each trial its own curve,
the curve it has when run alone."""

import dataclasses

import pytest
import torch

from mto import ConfigError, NonFiniteLossError
from mto.data.datasets import load_data
from mto.methods import registry
from mto.training.fusable import fusion_key
from mto.training.trainer import Trainer
from mto.training.trial import run_trial
from mto.training.unit import Unit, run_unit


def _with(cfg, **sections):
    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), **v) for k, v in sections.items()})


def _members(tiny_config, method="simmim"):
    """Three trials that differ in what a stacked model carries per trial: seed, learning rate, lambdas."""
    base = _with(tiny_config, mim={"method": method}, train={"epochs": 2}, mto={"lambda_e": 0.1, "lambda_r": 0.1})
    return [
        base,
        _with(base, train={"seed": 1, "base_lr": 1e-3, "min_lr": 1e-4, "weight_decay": 0.1}),
        _with(base, train={"seed": 2, "grad_clip": 1.0}, mto={"lambda_e": 0.3, "lambda_r": 0.05}),
    ]


@pytest.mark.parametrize("method", [m.name for m in registry.methods() if m.fusable])
def test_fused_trials_give_the_curves_of_separate_runs(tiny_config, method):
    configs = _members(tiny_config, method)
    data = load_data(configs[0].data)
    alone = [run_trial(c, data=data).history for c in configs]
    seen: list[tuple[dict, dict]] = []
    fused = run_unit(configs, lambda reports, failures: seen.append((reports, failures)), data=data)
    assert [sorted(r) for r, _ in seen] == [[0, 1, 2]] * 3 and not any(f for _, f in seen)
    for solo, together in zip(alone, fused):
        assert [h["epoch"] for h in together.history] == [h["epoch"] for h in solo]
        for a, b in zip(solo, together.history):
            for key in ("train/loss", "train/loss_mim", "train/loss_e", "train/loss_r", "hetero/l01", "hetero/l02"):
                if key in a:  # the same losses up to the rounding of batched kernels (fp32)
                    assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
            for key in ("eval/linear_top1", "val/knn_top1"):
                assert abs(b[key] - a[key]) <= 0.02, key  # a handful of test images may flip
        assert together.history[-1]["perf/fused_trials"] == 3.0
    # and the three trials did differ: fusing did not make them one trial
    finals = [h.history[-1]["train/loss"] for h in fused]
    assert len({round(f, 6) for f in finals}) == 3


def test_one_fused_step_gives_each_trial_its_own_gradient(tiny_config):
    configs = _members(tiny_config)
    data = load_data(configs[0].data)
    fused = Unit(configs, data)
    batches = [t.fixed_batch(32, seed=i) for i, t in enumerate(fused.trainers)]
    before = [{n: p.detach().clone() for n, p in t.model.named_parameters()} for t in fused.trainers]
    schedules = [torch.tensor(t.schedule_row(0)) for t in fused.trainers]
    lrs = [float(s[0]) for s in schedules]
    assert lrs[0] == 2 * lrs[1] > 0  # each member on its own learning rate
    out = fused.step([(images, mask, s, None) for (images, mask), s in zip(batches, schedules)])
    for i, (cfg, (images, mask)) in enumerate(zip(configs, batches)):
        alone = Trainer(cfg, data)
        assert all(torch.equal(p, before[i][n]) for n, p in alone.model.named_parameters())  # same start
        assert alone.schedule_row(0)[0] == pytest.approx(lrs[i])
        expected = alone.step(images, mask)  # its own schedule at step 0
        assert out["loss"][i].item() == pytest.approx(expected["loss"].item(), rel=1e-6)
        # the member's parameters are views of the stack and were stepped by its own optimiser
        member = dict(fused.trainers[i].model.named_parameters())
        assert member["mask_token"].data_ptr() == fused.params["mask_token"][i].data_ptr()
        state = fused.trainers[i].optimizer.state[member["mask_token"]]
        assert int(state["step"]) == 1
        assert torch.allclose(
            state["exp_avg"],
            alone.optimizer.state[dict(alone.model.named_parameters())["mask_token"]]["exp_avg"],
            rtol=1e-4,
            atol=1e-9,
        )


def test_a_nan_member_leaves_the_group_and_the_others_go_on(tiny_config):
    configs = [_with(c, train={"checkpoint_every": 2}) for c in _members(tiny_config)]
    configs[0] = _with(configs[0], train={"base_lr": 1e30})  # the first member: the stack's base model changes
    data = load_data(configs[0].data)
    seen = []
    results = run_unit(configs, lambda reports, failures: seen.append((reports, failures)), data=data)
    assert [(sorted(r), sorted(f)) for r, f in seen] == [([0, 1, 2], []), ([1, 2], [0]), ([1, 2], [])]
    assert isinstance(seen[1][1][0], NonFiniteLossError) and str(seen[1][1][0]).startswith(
        "non-finite training loss at epoch 1"
    )
    # the failure forces the survivors' checkpoints at epoch 1, although checkpoint_every is 2
    assert all(r.checkpoint is not None and r.checkpoint["epoch"] == 1 for r in seen[1][0].values())
    assert results[0] is None
    for i in (1, 2):
        solo = run_trial(configs[i], data=data).history
        loss = lambda history: [h["train/loss"] for h in history if "train/loss" in h]  # noqa: E731
        assert len(loss(solo)) == 2 and loss(results[i].history) == pytest.approx(loss(solo), rel=1e-4)


def test_resumed_fused_group_continues_from_its_members_checkpoints(tiny_config):
    configs = _members(tiny_config)
    data = load_data(configs[0].data)
    states = {}

    def keep(reports, failures):
        for i, r in reports.items():
            if r.epoch == 1:  # the state is live: saved at once, as the Ray trainable does
                states[i] = torch.load(_saved(r.checkpoint), weights_only=False)

    full = run_unit(configs, keep, data=data)
    seen = []
    resumed = run_unit(
        configs,
        lambda reports, failures: seen.append(sorted(r.epoch for r in reports.values())),
        resumes=[states[i] for i in range(3)],
        data=data,
    )
    assert seen == [[2, 2, 2]]  # epoch 0 and 1 are in the checkpoints' histories, not reported again
    for a, b in zip(full, resumed):
        assert b.history[-1]["train/loss"] == pytest.approx(a.history[-1]["train/loss"], rel=1e-6)


def _saved(state):
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


def test_fusion_key_groups_only_what_a_stacked_model_can_carry(tiny_config):
    a, b, c = _members(tiny_config)
    assert fusion_key(a) == fusion_key(b) == fusion_key(c)
    assert fusion_key(_with(a, mto={"lambda_e": 0.0})) != fusion_key(a)  # L_e no longer computed: other structure
    assert fusion_key(_with(a, train={"batch_size": 32})) != fusion_key(a)
    assert fusion_key(_with(a, mim={"method": "bootmae"})) is None
    assert fusion_key(_with(a, model={"drop_path": 0.1})) is None  # random draws inside the forward
    with pytest.raises(ConfigError, match="model.drop_path"):
        Unit([_with(a, model={"drop_path": 0.1})] * 2)
    with pytest.raises(ConfigError, match=r"model.depth=3 .*2 as in the group's first trial"):
        Unit([a, _with(a, model={"depth": 3})])
    with pytest.raises(ConfigError, match="mim.method"):
        Unit([_with(a, mim={"method": "conmim"})] * 2)


def test_a_lone_trial_and_a_fused_unit_go_through_one_epoch_loop(tiny_config, monkeypatch):
    """``run_trial`` is a unit of one: its epochs are ``Unit.train_epoch`` and ``Trainer.epoch_report``, the very
    functions a fused unit's epochs go through."""
    configs = _members(tiny_config)[:2]
    data = load_data(configs[0].data)
    calls: list[tuple[str, int]] = []
    for owner, name in ((Unit, "train_epoch"), (Trainer, "epoch_report")):
        original = getattr(owner, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls.append((_name, len(self.alive) if isinstance(self, Unit) else self.epoch))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(owner, name, counted)
    run_trial(configs[0], data=data)
    assert calls == [("train_epoch", 1), ("epoch_report", 0), ("train_epoch", 1), ("epoch_report", 1)]
    calls.clear()
    run_unit(configs, data=data)
    assert calls == [
        ("train_epoch", 2),
        ("epoch_report", 0),
        ("epoch_report", 0),
        ("train_epoch", 2),
        ("epoch_report", 1),
        ("epoch_report", 1),
    ]


def test_no_second_epoch_loop_in_the_library():
    """Every pre-training step's inputs (batch, schedule row, draws) are taken in ``Unit.train_epoch`` and every
    epoch is ended by the loop of ``run_unit``: a second loop over steps or epochs (for lone trials, say) would
    show up here."""
    import ast
    from pathlib import Path

    found: dict[str, list[str]] = {"step_inputs": [], "epoch_report": []}
    for path in sorted((Path(__file__).resolve().parents[2] / "mto").rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, ast.FunctionDef):
                for node in ast.walk(fn):
                    if isinstance(node, ast.Attribute) and node.attr in found and isinstance(node.ctx, ast.Load):
                        found[node.attr].append(f"{path.name}:{fn.name}")
    assert sorted(set(found["step_inputs"])) == ["unit.py:train_epoch"], found
    assert sorted(set(found["epoch_report"])) == ["unit.py:run_unit"], found
