"""Fused trials: K trials that share one architecture, trained as one stacked model (the HFTA idea,
Wang et al., MLSys 2021).

Small trials leave a GPU idle between kernel launches. Trials that differ only in what a stacked
model can carry per trial (seed, learning rate, weight decay, gradient clipping and the MTO
lambdas) run in one process: their parameters are stacked along a leading trial dimension and one
``torch.func.vmap`` over ``functional_call`` computes all their losses with batched kernels. Each
trial keeps its own everything else: its ``Trainer`` (generator, batches, masks, optimiser,
learning-rate schedule, evaluations, checkpoints, history), whose parameters are views into the
stacked tensors, so its optimiser steps them in place and its evaluations read them directly.

A fused trial computes the same losses as the trial run alone, up to the rounding of batched
kernels (fp32 on the CPU: about one unit in the last place per step; see tests/mto/test_fused.py).
A member whose loss turns NaN leaves the group with its reason; the others go on.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch.func import functional_call, vmap

from mto.config import TrialConfig
from mto.data.datasets import ImageData, load_data
from mto.training.fusable import check_fusable
from mto.training.trainer import LossSums, NonFiniteLossError, Trainer, compiles, epoch_metrics, resolve_device
from mto.training.trial import EpochReport, TrialResult, epoch_report, finetune_report, start_report


@dataclass
class Member:
    """One trial of a fused group: its trainer and (parameter, stacked name) pairs for routing gradients."""

    trainer: Trainer
    params: list[tuple[torch.nn.Parameter, str]]


class FusedTrainer:
    """K trials of one fusion key as one stacked model. ``trainers`` keep the configs' order; ``alive``
    (indices into it) shrinks when a member fails, and ``members`` holds the alive ones.

    Raises:
        ConfigError: the configs cannot be fused (``check_fusable``).
    """

    def __init__(self, configs: list[TrialConfig], data: Optional[ImageData] = None,
                 resumes: Optional[list[Optional[dict[str, Any]]]] = None):
        check_fusable(configs)
        data = (data or load_data(configs[0].data)).to(resolve_device(configs[0]))  # one copy on the device for all
        self.trainers = [Trainer(c, data) for c in configs]
        for t, state in zip(self.trainers, resumes or [None] * len(configs)):
            if state is not None:
                t.load_state_dict(state)
        if len({t.epoch for t in self.trainers}) > 1:
            raise ValueError("fused trials resume from one epoch: their checkpoints are of different epochs")
        self.alive = list(range(len(configs)))
        cfg = configs[0]
        self.autocast = self.trainers[0].autocast
        self.compiled = compiles(cfg, self.trainers[0].device)
        self._losses = torch.compile(self._stacked_losses) if self.compiled else self._stacked_losses
        self._stack()

    @property
    def epoch(self) -> int:
        return self.trainers[self.alive[0]].epoch

    def _stack(self) -> None:
        """Stack the alive members' parameters and buffers; each member's own tensors become views of them."""
        models = [self.trainers[i].model for i in self.alive]
        self.base = models[0]
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.members = [Member(self.trainers[i], []) for i in self.alive]
        for kind, store in (("parameters", self.params), ("buffers", self.buffers)):
            named = [dict(getattr(m, f"named_{kind}")()) for m in models]
            for name, first in named[0].items():
                stacked = torch.stack([d[name].detach() for d in named])
                if kind == "parameters":
                    stacked.requires_grad_(first.requires_grad)
                for k, d in enumerate(named):
                    d[name].data = stacked.data[k]  # the member's tensor now lives in the stack
                    if kind == "parameters" and first.requires_grad:
                        self.members[k].params.append((d[name], name))
                store[name] = stacked

    def _stacked_losses(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                        images: torch.Tensor, masks: torch.Tensor, factor: float) -> dict[str, torch.Tensor]:
        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor, m: torch.Tensor):
            return functional_call(self.base, (p, b), (x, m, factor))

        return vmap(one)(params, buffers, images, masks)

    def step(self, batches: list[tuple[torch.Tensor, torch.Tensor]], factor: float) -> dict[str, torch.Tensor]:
        """One optimisation step of every alive member on its own batch; losses ``[K]`` per name."""
        images = torch.stack([b[0] for b in batches])
        masks = torch.stack([b[1] for b in batches])
        with self.autocast, warnings.catch_warnings():
            # CPU attention has no batching rule and falls back to a per-trial loop (same result, slower)
            warnings.filterwarnings("ignore", message=".*batching rule.*")
            out = self._losses(self.params, self.buffers, images, masks, factor)
            out["loss"].sum().backward()  # trials are independent: each slice gets its own trial's gradient
        for k, member in enumerate(self.members):
            for p, name in member.params:
                grad = self.params[name].grad
                p.grad = None if grad is None else grad[k]  # None: this parameter took no part in the loss
            member.trainer.apply_gradients()
        for stacked in self.params.values():
            stacked.grad = None
        return out

    def train_epoch(self) -> dict[int, dict[str, float] | NonFiniteLossError]:
        """One epoch of every alive member; returns member index -> metrics, or the error of a member that
        failed (it leaves the group)."""
        trainers = [m.trainer for m in self.members]
        plans = [t.epoch_plan() for t in trainers]
        for t in trainers:
            t.model.train()
        sums, steps = LossSums(), trainers[0].steps_per_epoch
        start = time.perf_counter()
        for step in range(steps):
            schedule = [t.begin_step(step) for t in trainers]
            sums.add(self.step([t.batch(p, step) for t, p in zip(trainers, plans)], schedule[0][1]))
        means = sums.means()  # the epoch's one host sync
        elapsed = time.perf_counter() - start
        out: dict[int, dict[str, float] | NonFiniteLossError] = {}
        for i, t, mean, (lr, _) in zip(self.alive, trainers, means, schedule):
            try:
                out[i] = {**epoch_metrics(mean, t.epoch, lr, steps * t.cfg.train.batch_size, elapsed),
                          "perf/fused_trials": float(len(trainers))}
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
        if self.alive:
            self._stack()

    def finetune(self) -> tuple[dict[int, EpochReport], dict[int, str]]:
        """Each alive member with a pending fine-tuning, one after another (``mto.training.trial.finetune_report``); a
        member whose fine-tuning diverges leaves the group with its reason."""
        reports, failures = {}, {}
        for i in [i for i in self.alive if self.trainers[i].finetune_pending is not None]:
            try:
                reports[i] = finetune_report(self.trainers[i])
            except NonFiniteLossError as err:
                failures[i] = f"{type(err).__name__}: {err}"
        self.drop(list(failures))
        return reports, failures


GroupReport = Callable[[dict[int, EpochReport], dict[int, str]], None]


def run_fused(configs: list[TrialConfig], report: Optional[GroupReport] = None, *,
              resumes: Optional[list[Optional[dict[str, Any]]]] = None,
              data: Optional[ImageData] = None) -> list[Optional[TrialResult]]:
    """Train ``configs`` as one fused group; ``report(reports, failures)`` once per epoch (0 included),
    with each alive member's ``EpochReport`` and ``"<Error>: <reason>"`` of each member that failed in
    that epoch (keys: indices into ``configs``). Returns each member's result (None where it failed).
    An epoch in which a member failed carries every survivor's checkpoint, whatever ``train.checkpoint_every``
    says, so that a restart never trains a failed member again.
    """
    fused = FusedTrainer(configs, data, resumes)
    report = report or (lambda reports, failures: None)
    if not fused.trainers[fused.alive[0]].history:
        report({i: start_report(fused.trainers[i]) for i in fused.alive}, {})
    failed: set[int] = set()
    affinity: dict[int, dict[int, Any]] = {i: {} for i in range(len(configs))}
    while fused.alive:
        if any(fused.trainers[i].finetune_pending is not None for i in fused.alive):
            reports, failures = fused.finetune()
            failed |= set(failures)
            report(reports, failures)
        if not fused.alive or fused.epoch >= configs[0].train.epochs:
            break
        results = fused.train_epoch()
        failures = {i: f"{type(r).__name__}: {r}" for i, r in results.items() if isinstance(r, Exception)}
        failed |= set(failures)
        reports = {}
        for i, r in results.items():
            if i in failures:
                continue
            fused.trainers[i].epoch += 1
            reports[i] = epoch_report(fused.trainers[i], r, checkpoint=bool(failures))
            if "affinity" in reports[i].arrays:
                affinity[i][reports[i].epoch] = reports[i].arrays["affinity"]
        report(reports, failures)
    return [None if i in failed else TrialResult(t.history, affinity[i]) for i, t in enumerate(fused.trainers)]
