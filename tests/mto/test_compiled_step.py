"""The training step compiles to one graph: for every method, with MTO off, soft and hard, and with every
schedule that moves during training, two epochs run through one ``torch.compile(fullgraph=True)`` graph, with
no graph break, no recompile after the first step, and nothing in it that copies from the host or waits for
the device. Dynamo is counted with a backend that records its graphs and runs them as traced (no Inductor:
seconds, not minutes), so the losses must equal the eager run's up to rounding. The traced step differs from
the eager one in the last bits from its first step on; DTM's token matching (an argsort of similarities) turns a
last-bit difference into a different merge now and then, so epoch losses agree to 1e-3, not to the last bit."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from mto.config import DataConfig, EvalConfig, MIMConfig, ModelConfig, MTOConfig, TrainConfig, TrialConfig
from mto.data.datasets import load_data
from mto.methods import registry
from mto.training.unit import Unit

MTO = {
    "off": MTOConfig(),
    # L_spa on every block (explicit attention maps), L_e and L_r, the lambdas on a schedule that moves every step
    "soft": MTOConfig(lambda_spa=0.1, lambda_e=0.1, lambda_r=0.1, recalibration="soft", lambda_schedule="cosine_decay"),
    "hard": MTOConfig(
        lambda_e=0.1, lambda_r=0.1, recalibration="hard", lambda_schedule="linear_warmup", lambda_warmup_epochs=2
    ),
}
# What may not stand in a training step's graph: Python data made into a tensor (a host-to-device copy on a GPU)
# and reads of a tensor's value on the host (a sync).
HOST_FUNCTIONS = {torch.tensor, torch.as_tensor, torch.from_numpy, torch.Tensor.item, torch.Tensor.tolist}
HOST_METHODS = {"item", "tolist", "numpy", "cpu", "cuda"}
METHOD_OPTIONS = {  # ramps that move within the test's two epochs
    "bootmae": {"momentum_ramp_epochs": 2, "feature_weight_ramp_epochs": 2},
}


def _config(method: str, mto: str) -> TrialConfig:
    return TrialConfig(
        data=DataConfig(max_train=64),
        model=ModelConfig(embed_dim=32, depth=2, num_heads=2),
        mim=MIMConfig(method=method, **METHOD_OPTIONS.get(method, {})),
        mto=MTO[mto],
        train=TrainConfig(epochs=2, batch_size=32, warmup_epochs=1, grad_clip=1.0, compile=True),
        eval=EvalConfig(every=2, linear=False, knn=False, hetero_batch=8),
    )


def _host_work(graph: torch.fx.GraphModule) -> list[str]:
    """Nodes of ``graph`` that copy from or read back to the host: Python data made a tensor, a value read, a
    tensor moved to another device than its own (on a CPU-only machine the last cannot occur; on a GPU it can)."""
    found = []
    for node in graph.graph.nodes:
        if node.op == "call_function" and node.target in HOST_FUNCTIONS:
            found.append(node.format_node())
        elif node.op == "call_method" and node.target in HOST_METHODS:
            found.append(node.format_node())
        elif node.op == "call_method" and node.target == "to":
            source = node.args[0].meta.get("example_value")
            targets = [a for a in (*node.args[1:], *node.kwargs.values()) if isinstance(a, (torch.device, str))]
            if source is not None and any(torch.device(t) != source.device for t in targets):
                found.append(node.format_node())
    return found


def _train(cfg: TrialConfig, data, backend=None) -> list[dict[str, float]]:
    unit = Unit([cfg], data, backend=backend)
    return [unit.train_epoch()[0] for _ in range(cfg.train.epochs)]


@pytest.fixture(scope="module")
def data():
    return load_data(DataConfig(max_train=64))


@pytest.mark.parametrize("mto", list(MTO))
@pytest.mark.parametrize("method", registry.names())
def test_two_epochs_train_as_one_compiled_graph(method, mto, data):
    cfg = _config(method, mto)
    graphs: list[torch.fx.GraphModule] = []

    def recording(gm: torch.fx.GraphModule, example_inputs) -> object:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    counters.clear()
    compiled = _train(cfg, data, backend=recording)
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert len(graphs) == 1 and counters["stats"]["unique_graphs"] == 1  # compiled at the first step, never again
    assert _host_work(graphs[0]) == []
    eager = _train(replace(cfg, train=replace(cfg.train, compile=False)), data)  # the same step, not compiled
    for a, b in zip(eager, compiled):
        for key, value in a.items():
            if key.startswith("train/"):
                assert b[key] == pytest.approx(value, rel=1e-3, abs=1e-5), key


def test_the_schedules_of_the_test_move_within_its_two_epochs(data):
    """The graph test above would prove little if nothing changed between steps: every schedule there does."""
    from mto.training.trainer import Trainer

    for method in registry.names():
        for mto in ("soft", "hard"):
            trainer = Trainer(_config(method, mto), data)
            rows = torch.tensor([trainer.schedule_row(s) for s in range(2 * trainer.steps_per_epoch)])
            moving = (rows != rows[0]).any(dim=0)
            assert moving[:2].all(), (method, mto, rows)  # learning rate and lambda factor
            assert moving[2:].all(), (method, rows)  # every value of the method's clock
            draws = trainer.model.step_draws(0, 2, 32)
            if method in ("conmim", "dtm"):
                assert not torch.equal(draws[0], draws[1])  # drawn afresh every step
            else:
                assert draws is None


def test_a_host_read_in_the_step_is_found():
    """The host-work check is not vacuous: ``.item()`` and a tensor made from Python numbers are caught."""

    def step(x: torch.Tensor) -> torch.Tensor:
        return x * torch.tensor([2.0]) + x.sum().item()

    graphs: list[torch.fx.GraphModule] = []

    def recording(gm: torch.fx.GraphModule, example_inputs) -> object:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        torch.compile(step, backend=recording, fullgraph=True)(torch.ones(3))
    found = " ".join(_host_work(graphs[0]))
    assert "item" in found and "tensor" in found
