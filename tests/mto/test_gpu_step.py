"""On CUDA (``make test-gpu``; skipped without a GPU): the step compiled with Inductor and captured as one CUDA graph
is the eager step, replayed with no host sync and one graph launch per step, for every method with MTO hard and
for SimMIM without MTO, in fp32 and bf16; a fused unit of four SimMIM trials trains compiled; a checkpoint written
on the GPU resumes on the CPU. Every test also checks that no step fell back: a fallback would keep a trial
alive (``mto.training.fallback``) but would hide the very path these tests are for.

Tolerances of the losses, compiled against eager over 20 steps from the same weights and batches:
- fp32: ``1e-4`` relative. The same arithmetic in another order (Inductor fuses elementwise chains and may
  split reductions differently), so each step differs by a few units of fp32's last place (1.2e-7), and AdamW
  carries that into the next steps' weights.
- bf16: ``2e-2`` relative. Under autocast, eager rounds every matmul's output to bf16 (8 significant bits: a
  spacing of 2^-8 = 0.39% relative), where Inductor keeps a fused chain of elementwise work in fp32 and rounds
  only at kernel boundaries; the two round in different places, so a loss differs by a few bf16 spacings, and
  the weights after 20 steps by about as much. Five spacings (1.95%), rounded to 2e-2.
"""

from __future__ import annotations

import io
import time
from dataclasses import replace

import pytest
import torch
import torch._dynamo

from mto import run_trial
from mto.config import DataConfig, EvalConfig, MIMConfig, ModelConfig, MTOConfig, TrainConfig, TrialConfig
from mto.data.datasets import load_data
from mto.methods import registry
from mto.training.fallback import COMPILED, CUDA_GRAPHS, EAGER, SETTLING_CALLS
from mto.training.trainer import Trainer
from mto.training.unit import Unit

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

STEPS = 20
TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2}  # relative; why: the module's docstring
HARD = MTOConfig(lambda_e=0.1, lambda_r=0.1, recalibration="hard")
CASES = [(m, "hard") for m in registry.names()] + [(registry.DEFAULT, "off")]


def _config(method: str, mto: str, precision: str, compile_: bool) -> TrialConfig:
    """A 2-block ViT of width 32 on 1,024 digits, batch 32: an epoch holds the test's 20 steps."""
    return TrialConfig(
        data=DataConfig(max_train=1024),
        model=ModelConfig(embed_dim=32, depth=2, num_heads=2),
        mim=MIMConfig(method=method),
        mto=HARD if mto == "hard" else MTOConfig(),
        train=TrainConfig(
            epochs=2, batch_size=32, warmup_epochs=1, grad_clip=1.0, precision=precision, compile=compile_
        ),
        eval=EvalConfig(every=1, linear=False, knn=False, hetero_batch=8),
    )


@pytest.fixture(scope="module")
def data():
    return load_data(_config(registry.DEFAULT, "off", "fp32", False).data)


def _losses(trainer: Trainer, inputs: list, watch: bool) -> tuple[torch.Tensor, int]:
    """The losses of ``trainer``'s steps on ``inputs``; with ``watch``, the steps after the settling calls run with
    every host sync an error, under the profiler: returns the CUDA graph launches it counted (else 0)."""
    # each loss copied at once, as the epoch loop sums them: a CUDA graph's next replay reuses its output's memory
    losses = [trainer.step(*i)["loss"].clone() for i in inputs[:SETTLING_CALLS]]  # compile, warm up, record
    launches = 0
    if not watch:
        losses += [trainer.step(*i)["loss"].clone() for i in inputs[SETTLING_CALLS:]]
        return torch.stack(losses).float().cpu(), launches
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        torch.cuda.set_sync_debug_mode("error")
        try:
            losses += [trainer.step(*i)["loss"].clone() for i in inputs[SETTLING_CALLS:]]
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    launches = sum(e.name.startswith("cudaGraphLaunch") for e in prof.events())
    return torch.stack(losses).float().cpu(), launches


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize(("method", "mto"), CASES)
def test_the_compiled_cuda_graph_step_is_the_eager_step_without_a_host_sync(method, mto, precision, data):
    torch._dynamo.reset()
    compiled = Trainer(_config(method, mto, precision, True), data)
    eager = Trainer(_config(method, mto, precision, False), data)
    plan = compiled.epoch_plan()
    inputs = [compiled.step_inputs(plan, s) for s in range(STEPS)]
    start = time.perf_counter()
    got, launches = _losses(compiled, inputs, watch=True)
    seconds = time.perf_counter() - start
    want, _ = _losses(eager, inputs, watch=False)
    way = compiled.train_step.fallback
    rel = ((got - want).abs() / want.abs()).max().item()
    print(f"\n  {method} mto={mto} {precision}: {way.describe()}; {seconds:.1f} s for {STEPS} steps, compile included;")
    print(f"  {launches} CUDA graph launches in {STEPS - SETTLING_CALLS} steps; losses within {rel:.2e} relative")
    assert way.way == CUDA_GRAPHS and way.failures == []
    assert launches == STEPS - SETTLING_CALLS  # one graph per step, replayed
    torch.testing.assert_close(got, want, rtol=TOLERANCE[precision], atol=0)


def test_a_fused_unit_of_four_simmim_trials_trains_compiled(data):
    base = _config(registry.DEFAULT, "hard", "bf16", True)
    configs = [replace(base, train=replace(base.train, seed=s, epochs=3)) for s in range(4)]
    torch._dynamo.reset()
    unit = Unit(configs, data)
    epochs = [unit.train_epoch() for _ in range(3)]
    print(f"\n  fused x4: {unit.fallback.describe()}; loss per epoch and member:")
    for e in epochs:
        print("  " + "  ".join(f"{e[i]['train/loss']:.4f}" for i in range(4)))
    assert unit.fallback.way == COMPILED and unit.fallback.failures == []
    assert len({epochs[0][i]["train/loss"] for i in range(4)}) == 4  # four trials, four seeds
    for i in range(4):
        assert torch.isfinite(torch.tensor(epochs[-1][i]["train/loss"]))
        assert epochs[-1][i]["train/loss"] < epochs[0][i]["train/loss"]


def test_a_checkpoint_written_on_the_gpu_resumes_on_the_cpu(data):
    gpu = _config(registry.DEFAULT, "hard", "bf16", True)
    gpu = replace(gpu, train=replace(gpu.train, epochs=1), eval=EvalConfig(every=1, hetero_batch=8, probe_steps=10))
    reports = []
    torch._dynamo.reset()
    run_trial(gpu, reports.append, data=data)
    assert reports[-1].step_way == CUDA_GRAPHS and reports[-1].step_fallbacks == ()
    saved = io.BytesIO()
    torch.save(reports[-1].checkpoint, saved)
    state = torch.load(io.BytesIO(saved.getvalue()), map_location="cpu", weights_only=True)  # as a trial reads it

    cpu = replace(gpu, train=replace(gpu.train, epochs=2, device="cpu", precision="auto", compile="auto"))
    resumed = []
    result = run_trial(cpu, resumed.append, resume=state, data=data)
    assert [r.epoch for r in resumed] == [2] and resumed[0].step_way == EAGER
    assert result.curve("train/loss")[0] == [1, 2]
    assert all(torch.isfinite(torch.tensor(v)) for v in result.curve("train/loss")[1])
    assert "eval/knn_top1" in resumed[0].metrics
