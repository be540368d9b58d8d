"""A compile problem never fails a trial: where compiling or capturing the step raises (at the first call, after the
compiled code changed the state, or at a later recompile), the trial goes on eagerly from exactly the state before
the failed call (parameters, optimiser state, the random generator the step draws from, the method's clock), so
its losses and weights equal an eager trial's, bit for bit on the CPU. The failing compilers are real
``torch.compile`` backends: Dynamo traces the real step and hands them its graph."""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import replace

import pytest
import torch
import torch._dynamo

from mto.config import DataConfig, EvalConfig, ModelConfig, MTOConfig, TrainConfig, TrialConfig
from mto.data.datasets import load_data
from mto.training.fallback import COMPILED, EAGER, SETTLING_CALLS
from mto.training.step import TrainStep
from mto.training.unit import Unit, run_unit

# drop path: the step draws from torch's generator, which a failed call must give back too
CFG = TrialConfig(
    data=DataConfig(max_train=64),
    model=ModelConfig(embed_dim=32, depth=2, num_heads=2, drop_path=0.1),
    mto=MTOConfig(lambda_e=0.1, lambda_r=0.1, recalibration="hard"),
    train=TrainConfig(epochs=2, batch_size=32, warmup_epochs=1, grad_clip=1.0, compile=True),
    eval=EvalConfig(every=1, linear=False, knn=False, hetero_batch=8),
)
EAGER_CFG = replace(CFG, train=replace(CFG.train, compile=False))


def failing_backend(how: str, at_compile: int = 1):
    """A ``torch.compile`` backend whose ``at_compile``-th compile fails ``how``: "compiling" (raises while it
    compiles), "first call" (the compiled code raises when called, before it ran), "mutating" (it runs the whole step,
    changing the weights, the optimiser's state and the generator, then raises, as a capture failing late would).
    Earlier compiles run the graph as traced."""
    compiles = 0

    def backend(gm: torch.fx.GraphModule, example_inputs):
        nonlocal compiles
        compiles += 1
        if compiles < at_compile:
            return gm.forward
        if how == "compiling":
            raise RuntimeError("no working C++ compiler")

        def run(*args):
            if how == "mutating":
                gm.forward(*args)
            raise RuntimeError("CUDA graph capture failed")

        return run

    return backend


@pytest.fixture(scope="module")
def data():
    return load_data(CFG.data)


def _trial(cfg: TrialConfig, data, backend=None) -> list:
    """The trial's reports of its trained epochs (the last one carries its checkpoint)."""
    reports = []
    run_unit([cfg], lambda r, f: reports.extend(r.values()), data=data, backend=backend)
    return [r for r in reports if r.epoch > 0]


def _epoch(unit: Unit) -> dict[str, float]:
    """One epoch of a unit of one, ended as the trial loop ends it (the trainer counts it)."""
    metrics = unit.train_epoch()[0]
    unit.trainers[0].epoch_report(metrics)
    return metrics


@pytest.fixture(scope="module")
def eager(data):
    """The eager trial's reports."""
    reports = _trial(EAGER_CFG, data)
    assert all(r.step_way == EAGER and r.step_fallbacks == () for r in reports)
    return reports


def _losses(epochs: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in e.items() if k.startswith("train/")} for e in epochs]


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("how", ["compiling", "first call", "mutating"])
def test_a_step_that_fails_to_compile_trains_on_eagerly_as_an_eager_trial(how, data, eager):
    torch._dynamo.reset()
    trained = _trial(CFG, data, failing_backend(how))
    # bit for bit: the failed call left nothing behind
    assert _losses([r.metrics for r in trained]) == _losses([r.metrics for r in eager])
    _same_weights(trained[-1].checkpoint["model"], eager[-1].checkpoint["model"])
    assert all(r.step_way == EAGER for r in trained)
    assert len(trained[-1].step_fallbacks) == 1
    assert trained[-1].step_fallbacks[0].startswith(f"{COMPILED} failed: ")
    said = "no working C++ compiler" if how == "compiling" else "CUDA graph capture failed"
    assert said in trained[-1].step_fallbacks[0]


def test_a_recompile_that_fails_later_falls_back_from_the_state_before_it(data, eager):
    """The step compiles and settles; then Dynamo compiles it again (its caches reset) and that compile's code
    changes the state and raises: the state kept when the compile started is put back. The trial equals one
    compiled for its first epoch and resumed eagerly from its checkpoint for the second."""
    torch._dynamo.reset()
    cfg = replace(CFG, train=replace(CFG.train, epochs=3))
    unit = Unit([cfg], data, backend=failing_backend("mutating", at_compile=2))
    for _ in range(2):  # 4 steps: past the settling calls
        _epoch(unit)
    assert unit.trainers[0].steps_per_epoch * 2 > SETTLING_CALLS
    assert unit.fallback.way == COMPILED and unit.fallback.failures == []
    checkpoint = copy.deepcopy(unit.trainers[0].state_dict())  # the live tensors train on
    torch._dynamo.reset()  # the next call compiles again
    last = _epoch(unit)
    assert unit.fallback.way == EAGER and "CUDA graph capture failed" in unit.fallback.failures[0]

    reference = Unit([replace(cfg, train=replace(cfg.train, compile=False))], data, resumes=[checkpoint])
    assert _losses([last]) == _losses([_epoch(reference)])
    _same_weights(unit.trainers[0].model.state_dict(), reference.trainers[0].model.state_dict())


def test_a_settled_step_that_raises_without_compiling_fails_as_the_steps_own_error(data):
    """Past its settling calls, a compiled step that raises in a call that compiled nothing kept no state to go back
    to: its error is the trial's (as an eager step's error would be), not hidden by a fallback."""
    torch._dynamo.reset()
    calls = 0

    def backend(gm: torch.fx.GraphModule, example_inputs):
        def run(*args):
            nonlocal calls
            calls += 1
            if calls > SETTLING_CALLS + 1:
                raise RuntimeError("an illegal memory access was encountered")
            return gm.forward(*args)

        return run

    unit = Unit([replace(CFG, train=replace(CFG.train, epochs=4))], data, backend=backend)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        for _ in range(4):
            unit.train_epoch()
    assert unit.fallback.way == COMPILED and unit.fallback.failures == []


def test_an_error_of_the_eager_step_still_fails(data):
    from mto.methods.base import build_model
    from mto.training.optim import param_groups

    def broken(model, images, mask, clock, draws):
        raise ValueError("the step's own error")

    torch._dynamo.reset()
    model = build_model(CFG, 3)
    optimizer = torch.optim.AdamW(param_groups(model, 0.05))
    step = TrainStep(model, optimizer, 0.0, nullcontext(), compile_backend="eager", loss_fn=broken)
    images, mask = torch.zeros(2, 3, 16, 16), model.sample_mask(2, torch.Generator().manual_seed(0), "cpu")
    with pytest.raises(ValueError, match="the step's own error"):
        step(images, mask, torch.zeros(2 + len(model.clock_values(0))))
    assert step.fallback.way == EAGER and len(step.fallback.failures) == 1  # compiled, then eager: both raised
    assert model.steps_done == 0  # no step counted


def test_a_fused_unit_whose_compile_fails_trains_on_as_an_eager_fused_unit(data):
    configs = [replace(CFG, train=replace(CFG.train, epochs=1), model=replace(CFG.model, drop_path=0.0))]
    configs.append(replace(configs[0], train=replace(configs[0].train, seed=1)))
    torch._dynamo.reset()
    fused = Unit(configs, data, backend=failing_backend("mutating"))
    eager = Unit([replace(c, train=replace(c.train, compile=False)) for c in configs], data)
    got, want = fused.train_epoch(), eager.train_epoch()
    assert [_losses([got[i]]) for i in got] == [_losses([want[i]]) for i in want]
    assert fused.fallback.way == EAGER and "CUDA graph capture failed" in fused.fallback.failures[0]
