"""A unit: K >= 1 trials trained together, and the one epoch loop every trial goes through.

A lone trial is a unit of one. Trials that share one architecture and differ only in what a stacked
model can carry per trial (seed, learning rate, weight decay, gradient clipping and the MTO lambdas)
can be fused into one unit (the HFTA idea, Wang et al., MLSys 2021): their parameters are stacked
along a leading trial dimension and one ``torch.func.vmap`` over ``functional_call`` computes all their
losses with batched kernels, so small trials stop leaving a GPU idle between kernel launches. Each
member keeps its own everything else: its ``Trainer`` (generator, batches, masks, optimiser,
learning-rate schedule, epoch counter, evaluations, checkpoints, history), whose parameters are views
into the stacked tensors, so its optimiser steps them in place and its evaluations read them directly.

A fused member computes the same losses as the trial run alone, up to the rounding of batched
kernels (fp32 on the CPU: about one unit in the last place per step; see tests/mto/test_fused.py).
A member whose loss turns NaN leaves the unit with its error; the others go on.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, vmap

from mto.config import TrialConfig
from mto.config.errors import NonFiniteLossError
from mto.data.datasets import ImageData, load_data
from mto.training.fallback import COMPILED, EAGER, Fallback, Way
from mto.training.fusable import check_fusable
from mto.training.logged import TRAIN_LR
from mto.training.reports import EpochReport, TrialResult, UnitReport
from mto.training.trainer import Trainer, compile_backend, resolve_device


class LossSums:
    """Per-step losses summed on the device and read back once per epoch (one host sync)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.sums: torch.Tensor | None = None
        self.steps = 0

    def add(self, out: dict[str, torch.Tensor]) -> None:
        self.keys = self.keys or sorted(out)  # loss, loss_mim, loss_e, ... and a method's own parts
        step = torch.stack([out[k].detach().float() for k in self.keys], dim=-1)
        self.sums = step if self.sums is None else self.sums + step
        self.steps += 1

    def means(self) -> list[dict[str, float]]:
        """{loss name: mean} of each member (the losses have a leading member dimension)."""
        return [dict(zip(self.keys, row)) for row in (self.sums / self.steps).tolist()]


def epoch_metrics(means: dict[str, float], epoch: int, lr: float, images: int, elapsed: float) -> dict[str, float]:
    """``train/*`` and ``perf/*`` of epoch ``epoch`` (0-based); raises NonFiniteLossError for a NaN or infinite loss."""
    if not all(np.isfinite(list(means.values()))):
        raise NonFiniteLossError(
            f"non-finite training loss at epoch {epoch + 1}: " + ", ".join(f"{k}={v}" for k, v in means.items())
        )
    metrics = {f"train/{k}": v for k, v in means.items()}
    metrics.update({TRAIN_LR: lr, "perf/img_per_s": images / elapsed, "perf/epoch_s": elapsed})
    return metrics


@dataclass
class Member:
    """One trial of a fused unit: its trainer and the stacked name of each parameter its step updates (in the
    order of ``trainer.train_step.flat``), for routing gradients."""

    trainer: Trainer
    names: list[str]


class Unit:
    """K >= 1 trials trained together. ``trainers`` keep the configs' order; ``alive`` (indices into it)
    shrinks when a member fails. With K > 1 the members are one stacked model (``stacked``); a unit of one
    steps through its trainer's own (possibly compiled) ``TrainStep``.

    Raises:
        ConfigError: the configs cannot be fused (``check_fusable``), or a config is invalid for this machine.
    """

    def __init__(
        self,
        configs: list[TrialConfig],
        data: ImageData | None = None,
        resumes: list[dict[str, Any] | None] | None = None,
        backend: str | Callable | None = None,
    ):
        self.stacked = len(configs) > 1
        if self.stacked:
            check_fusable(configs)
        data = (data or load_data(configs[0].data)).to(resolve_device(configs[0]))  # one copy on the device for all
        self.trainers = [Trainer(c, data, backend) for c in configs]
        for t, state in zip(self.trainers, resumes or [None] * len(configs)):
            if state is not None:
                t.load_state_dict(state)
        if len({t.epoch for t in self.trainers}) > 1:
            raise ValueError("fused trials resume from one epoch: their checkpoints are of different epochs")
        self.alive = list(range(len(configs)))
        self.autocast = self.trainers[0].autocast
        compiler = compile_backend(configs[0], self.trainers[0].device, backend)
        if self.stacked:  # the stacked forward and its backward compiled; the members' updates run eagerly
            ways = [Way(EAGER, self._stacked_backward(self._stacked_losses))]
            if compiler:
                ways.insert(
                    0, Way(COMPILED, self._stacked_backward(torch.compile(self._stacked_losses, backend=compiler)))
                )
            self.fused_step = Fallback(ways, lambda: [*self.params.values(), *self.buffers.values()])
            self._stack()

    @property
    def fallback(self) -> Fallback:
        """How the unit's steps run: a lone trial's own step, or the fused unit's stacked forward and backward."""
        return self.fused_step if self.stacked else self.trainers[self.alive[0]].train_step.fallback

    @property
    def epoch(self) -> int:
        return self.trainers[self.alive[0]].epoch

    @property
    def live(self) -> list[Trainer]:
        return [self.trainers[i] for i in self.alive]

    def _stack(self) -> None:
        """Stack the alive members' parameters and buffers; each member's own tensors become views of them."""
        models = [self.trainers[i].model for i in self.alive]
        self.base = models[0]
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        for kind, store in (("parameters", self.params), ("buffers", self.buffers)):
            named = [dict(getattr(m, f"named_{kind}")()) for m in models]
            for name, first in named[0].items():
                stacked = torch.stack([d[name].detach() for d in named])
                if kind == "parameters":
                    stacked.requires_grad_(first.requires_grad)
                for k, d in enumerate(named):
                    d[name].data = stacked.data[k]  # the member's tensor now lives in the stack
                store[name] = stacked
        names = {id(p): n for n, p in models[0].named_parameters()}
        order = [names[id(p)] for p in self.live[0].train_step.flat]  # every member's model has the same names
        self.members = [Member(t, order) for t in self.live]

    def _stacked_losses(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        images: torch.Tensor,
        masks: torch.Tensor,
        factor: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor, m: torch.Tensor):
            return functional_call(self.base, (p, b), (x, m, factor))

        return vmap(one)(params, buffers, images, masks)

    def _stacked_backward(self, losses: Callable) -> Callable:
        """The stacked losses through ``losses`` (compiled or not) and their backward into the stacked gradients."""

        def run(images: torch.Tensor, masks: torch.Tensor, factor: torch.Tensor) -> dict[str, torch.Tensor]:
            out = losses(self.params, self.buffers, images, masks, factor)
            out["loss"].sum().backward()  # trials are independent: each slice gets its own trial's gradient
            return {k: v.detach() for k, v in out.items()}

        return run

    def step(self, inputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]]):
        """One optimisation step of every alive member on its own ``Trainer.step_inputs`` (images, mask, schedule
        row, draws); losses ``[K]`` per name."""
        if not self.stacked:
            return {k: v[None] for k, v in self.trainers[self.alive[0]].step(*inputs[0]).items()}
        images = torch.stack([i[0] for i in inputs])
        masks = torch.stack([i[1] for i in inputs])
        with self.autocast, warnings.catch_warnings():
            # CPU attention has no batching rule and falls back to a per-trial loop (same result, slower)
            warnings.filterwarnings("ignore", message=".*batching rule.*")
            out = self.fused_step(images, masks, inputs[0][2][1])
        for k, (member, (_, _, schedule, _)) in enumerate(zip(self.members, inputs)):
            member.trainer.apply_gradients([self.params[name].grad[k] for name in member.names], schedule)
        for stacked in self.params.values():
            stacked.grad = None
        return out

    def train_epoch(self) -> dict[int, dict[str, float] | NonFiniteLossError]:
        """One epoch of every alive member: the one loop over a trial's steps. Returns member index -> its
        ``train/*`` and ``perf/*`` metrics, or the error of a member that failed (it leaves the unit)."""
        trainers = self.live
        plans = [t.epoch_plan() for t in trainers]
        for t in trainers:
            t.model.train()
        sums, steps = LossSums(), trainers[0].steps_per_epoch
        start = time.perf_counter()
        for step in range(steps):
            sums.add(self.step([t.step_inputs(p, step) for t, p in zip(trainers, plans)]))
        means = sums.means()  # the epoch's one host sync
        elapsed = time.perf_counter() - start
        out: dict[int, dict[str, float] | NonFiniteLossError] = {}
        for i, t, mean, plan in zip(self.alive, trainers, means, plans):
            try:
                out[i] = epoch_metrics(mean, t.epoch, plan.last_lr, steps * t.cfg.train.batch_size, elapsed)
                if self.stacked:
                    out[i]["perf/fused_trials"] = float(len(trainers))
            except NonFiniteLossError as err:
                out[i] = err
        self.drop([i for i, r in out.items() if isinstance(r, Exception)])
        return out

    def drop(self, failed: list[int]) -> None:
        """Members ``failed`` leave the group: their optimiser state and their views into the stack are let go."""
        if not failed:
            return
        self.alive = [i for i in self.alive if i not in failed]
        for i in failed:
            self.trainers[i].optimizer.state.clear()
            for t in (*self.trainers[i].model.parameters(), *self.trainers[i].model.buffers()):
                t.data = t.data.new_empty(0)
        if self.alive and self.stacked:
            self._stack()

    def finetune(self) -> tuple[dict[int, EpochReport], dict[int, Exception]]:
        """Each alive member with a pending fine-tuning, one after another (``Trainer.finetune_report``); a
        member whose fine-tuning diverges leaves the unit with its error."""
        reports, failures = {}, {}
        for i in [i for i in self.alive if self.trainers[i].finetune_pending is not None]:
            try:
                reports[i] = self.trainers[i].finetune_report()
            except NonFiniteLossError as err:
                failures[i] = err
        self.drop(list(failures))
        return reports, failures


def run_unit(
    configs: list[TrialConfig],
    report: UnitReport | None = None,
    *,
    resumes: list[dict[str, Any] | None] | None = None,
    data: ImageData | None = None,
    backend: str | Callable | None = None,
) -> list[TrialResult | None]:
    """Train ``configs`` as one unit (a lone trial, or a fused group); ``report(reports, failures)`` once per
    epoch (0 included) and once per fine-tuning, with each alive member's ``EpochReport`` and the error of each
    member that failed then (keys: indices into ``configs``). Returns each member's result (None where it
    failed). An epoch in which a member failed carries every survivor's checkpoint, whatever
    ``train.checkpoint_every`` says, so that a restart never trains a failed member again. ``backend``: the
    ``torch.compile`` backend where ``train.compile`` compiles (default Inductor; tests count graphs with their own).
    """
    unit = Unit(configs, data, resumes, backend)
    told = report or (lambda reports, failures: None)

    def report(reports: dict[int, EpochReport], failures: dict[int, Exception]) -> None:
        for r in reports.values():  # how the steps ran so far: a compile problem that fell back is said every epoch
            r.step_way, r.step_fallbacks = unit.fallback.way, tuple(unit.fallback.failures)
        told(reports, failures)

    if not unit.live[0].history:
        report({i: unit.trainers[i].start_report() for i in unit.alive}, {})
    failed: set[int] = set()
    affinity: dict[int, dict[int, Any]] = {i: {} for i in range(len(configs))}
    while unit.alive:
        if any(t.finetune_pending is not None for t in unit.live):
            reports, failures = unit.finetune()
            failed |= set(failures)
            report(reports, failures)
        if not unit.alive or unit.epoch >= configs[0].train.epochs:
            break
        results = unit.train_epoch()
        failures = {i: r for i, r in results.items() if isinstance(r, Exception)}
        failed |= set(failures)
        reports = {
            i: unit.trainers[i].epoch_report(r, checkpoint=bool(failures))
            for i, r in results.items()
            if i not in failures
        }
        for i, r in reports.items():
            if "affinity" in r.arrays:
                affinity[i][r.epoch] = r.arrays["affinity"]
        report(reports, failures)
    return [None if i in failed else TrialResult(t.history, affinity[i]) for i, t in enumerate(unit.trainers)]
