"""One optimisation step of one trial as one function: forward, gradients, clipping, AdamW and the method's own
update (momentum encoders), compiled whole when ``train.compile`` says so.

Everything that changes from step to step reaches the step as a device tensor: the images, the mask, the
step's schedule row ``[lr, lambda factor, *the method's clock]`` (``Trainer.schedule_row``) and the method's
own random draws (``MaskedImageModel.draw``). Nothing inside reads a Python number that changes during
training, copies from the host or waits for the device, so under ``torch.compile(fullgraph=True)`` two
epochs run as one graph, compiled once (tests/mto/test_compiled_step.py counts graphs, breaks and
recompiles per method), and on CUDA the whole step is captured as one CUDA graph (``mode="reduce-overhead"``)
and replayed. The gradients come from ``torch.autograd.grad``, traced into the same graph
(``trace_autograd_ops``); AdamW is torch's own functional ``adamw`` on the optimiser's own state, so
checkpoints keep ``torch.optim.AdamW``'s state dict. A compile or capture problem never fails the step: it runs
on without CUDA graphs, then eagerly, from the state before the failed call (``mto.training.fallback``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import torch._dynamo
from torch.optim.adamw import adamw

from mto.methods.base import MaskedImageModel
from mto.training.fallback import COMPILED, CUDA_GRAPHS, EAGER, Fallback, Way

# Where trials compile: Inductor, with CUDA graphs on CUDA (the step is launch-bound at these model sizes).
BACKEND = "inductor"
CUDA_MODE = "reduce-overhead"

# (model, images, mask, clock, draws) -> the loss: a hand-written reference in place of the model's own losses
LossFn = Callable[[MaskedImageModel, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


class TrainStep:
    """The training step of one model and its ``torch.optim.AdamW``.

    Args:
        model: the MIM model; optimizer: its AdamW (groups as ``mto.training.optim.param_groups``).
        grad_clip: max global gradient norm (0: none); autocast: the precision context.
        compile_backend: ``None`` runs eagerly; else ``torch.compile``'s backend (``"inductor"``, or a callable:
            tests count graphs with one). On CUDA, Inductor captures the step as a CUDA graph. Where compiling or
            capturing fails, the step falls back (``fallback``: its ``way`` and ``failures``).
        loss_fn: replaces the model's own losses (benchmarks time hand-written references through the same step).
        cuda_graphs: compiled with Inductor on CUDA, capture the step as one CUDA graph (``train.cuda_graphs``).
    """

    def __init__(
        self,
        model: MaskedImageModel,
        optimizer: torch.optim.Optimizer,
        grad_clip: float,
        autocast: AbstractContextManager,
        compile_backend: str | Callable | None = None,
        loss_fn: LossFn | None = None,
        cuda_graphs: bool = True,
    ):
        self.loss_fn = loss_fn
        self.model, self.optimizer, self.grad_clip, self.autocast = model, optimizer, grad_clip, autocast
        # every trainable parameter of every method reaches the loss (torch.autograd.grad raises otherwise)
        self.params = [list(g["params"]) for g in optimizer.param_groups]
        self.flat = [p for group in self.params for p in group]
        device = self.flat[0].device
        self.compiled, self.backend = compile_backend is not None, compile_backend
        # torch's capturable AdamW keeps its step count on the device (CUDA graphs need it there); on a CPU it has
        # the per-tensor implementation only, compiled or not, so both give the same numbers
        self.capturable = device.type == "cuda"
        self.init_state()
        ways = [Way(EAGER, self._step)]
        if self.compiled:
            ways.insert(0, Way(COMPILED, self._traced(None)))
            if cuda_graphs and device.type == "cuda" and compile_backend == "inductor":
                ways.insert(0, Way(CUDA_GRAPHS, self._traced(CUDA_MODE)))
        self.fallback = Fallback(ways, self.state)

    def _traced(self, mode: str | None) -> Callable:
        """The step compiled whole (one graph, its gradients traced into it), with Inductor's ``mode``."""
        compiled = torch.compile(self._step, fullgraph=True, backend=self.backend, mode=mode)

        def call(*args: torch.Tensor | None) -> dict[str, torch.Tensor]:
            with torch._dynamo.config.patch(trace_autograd_ops=True):
                return compiled(*args)

        return call

    def state(self) -> list[torch.Tensor]:
        """Every tensor a step changes: the model's parameters and buffers, the optimiser's state."""
        optimizer = [t for p in self.flat for t in self.optimizer.state[p].values() if isinstance(t, torch.Tensor)]
        return [*self.model.parameters(), *self.model.buffers(), *optimizer]

    def init_state(self) -> None:
        """AdamW's state, made before the first step (the step count on the device), so the step never creates it.
        Also after ``optimizer.load_state_dict``: a restored state is moved where the step expects it."""
        for p in self.flat:
            state = self.optimizer.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] = state["step"].to(p.device if self.capturable else "cpu", torch.float32)
            if self.compiled:
                for t in state.values():  # a fixed address: CUDA graphs replay on the same buffers
                    torch._dynamo.mark_static_address(t)

    def __call__(
        self,
        images: torch.Tensor,
        mask: torch.Tensor,
        schedule: torch.Tensor,
        draws: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One step; returns the step's losses (detached). The model's clock ticks after the step."""
        out = self.fallback(images, mask, schedule, draws)
        self.model.tick()
        return out

    def _step(
        self,
        images: torch.Tensor,
        mask: torch.Tensor,
        schedule: torch.Tensor,
        draws: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        clock = schedule[2:]
        with self.autocast:
            if self.loss_fn is None:
                out = self.model(images, mask, schedule[1], clock=clock, draws=draws)
            else:
                out = {"loss": self.loss_fn(self.model, images, mask, clock, draws)}
        grads = torch.autograd.grad(out["loss"], self.flat)
        self.update(list(grads), schedule)
        return {k: v.detach() for k, v in out.items()}

    @torch.no_grad()
    def update(self, grads: list[torch.Tensor], schedule: torch.Tensor) -> None:
        """Clip ``grads`` (one per ``self.flat``; ``train.grad_clip``), step AdamW at ``schedule[0]``, then the
        method's own update (momentum encoders) with its clock ``schedule[2:]``."""
        if self.grad_clip:
            norm = torch.nn.utils.get_total_norm(grads, 2.0)
            torch._foreach_mul_(grads, (self.grad_clip / (norm + 1e-6)).clamp(max=1.0))
        # a device tensor where the step is compiled or captured; eager on a CPU, a number (nothing to sync there),
        # which spares the per-tensor AdamW a dozen tensor operations per parameter
        traced = torch.compiler.is_compiling()
        lr, start = (schedule[0] if traced or self.capturable else float(schedule[0])), 0
        for group, params in zip(self.optimizer.param_groups, self.params):
            state = [self.optimizer.state[p] for p in params]
            beta1, beta2 = group["betas"]
            adamw(
                params,
                grads[start : start + len(params)],
                [s["exp_avg"] for s in state],
                [s["exp_avg_sq"] for s in state],
                [],
                [s["step"] for s in state],
                foreach=self.capturable,
                capturable=self.capturable,
                amsgrad=False,
                beta1=beta1,
                beta2=beta2,
                lr=lr,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
            )
            start += len(params)
        self.model.after_step(schedule[2:])
