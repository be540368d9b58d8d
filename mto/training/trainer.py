"""The state of one trial while it trains: data on the device, model, optimiser, generator, epoch, history.

``Trainer`` holds one trial's steps, evaluations, reports and checkpoints, and counts its own epochs;
``mto.training.unit`` runs the epochs of one or several trainers (a lone trial, or a fused unit trained
as one stacked model) in its one epoch loop.

Randomness (shuffling, crops, masks) is drawn on the CPU from one seeded generator and moved to
the device once per epoch, so a seed gives the same batches on any device and a CPU run is
exactly reproducible; the GPU differs only by floating-point precision (bf16 autocast).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mto.config import ConfigError, TrialConfig
from mto.data.datasets import ImageData, augment, crop_params, load_data, normalize
from mto.data.splits import stratified_subset
from mto.methods.base import MaskedImageModel, build_model
from mto.objective.heterogeneity import affinity_map, masked_first_order, similarity, token_heterogeneity
from mto.objective.schedules import lambda_factor, learning_rate
from mto.training import logged
from mto.training.finetune import finetune
from mto.training.optim import param_groups
from mto.training.reports import EpochReport
from mto.training.step import BACKEND, TrainStep


@dataclass
class EpochPlan:
    """One epoch's inputs for every step, on the device: image order ``[n]``, crop boxes and masks ``[n, N]``,
    the schedule ``[steps, 2 + C]`` (``Trainer.schedule_row`` of each step) and the method's own draws
    ``[steps, ...]`` (None when it draws nothing); ``last_lr``, the learning rate of the epoch's last step."""

    order: torch.Tensor
    crops: torch.Tensor
    masks: torch.Tensor
    schedule: torch.Tensor
    draws: torch.Tensor | None
    last_lr: float


def resolve_device(cfg: TrialConfig) -> torch.device:
    """``train.device``: auto picks CUDA when present."""
    want = cfg.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device", want, "auto or cpu: no CUDA device is available here")
    return torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")


def compiles(cfg: TrialConfig, device: torch.device) -> bool:
    """``train.compile``: true, false, or auto (on CUDA only)."""
    return cfg.train.compile is True or (cfg.train.compile == "auto" and device.type == "cuda")


def compile_backend(
    cfg: TrialConfig, device: torch.device, override: str | Callable | None = None
) -> str | Callable | None:
    """The ``torch.compile`` backend of a trial's step (``override`` where given, else Inductor), or None (eager)."""
    return (override or BACKEND) if compiles(cfg, device) else None


def _autocast(device: torch.device, precision: str):
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


class Trainer:
    """The state of one trial: data on the device, model, optimiser, generator, history."""

    def __init__(self, cfg: TrialConfig, data: ImageData | None = None, backend: str | Callable | None = None):
        self.cfg = cfg
        self.device = resolve_device(cfg)
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        data = data or load_data(cfg.data)
        n = data.train_x.shape[0]
        if cfg.train.batch_size > n:
            raise ConfigError("train.batch_size", cfg.train.batch_size, f"at most the {n} training images")
        self.probes_on = tuple(p for p in logged.probes() if logged.why_absent(cfg, p.name) is None)
        if self.probes_on and data.num_classes < 2:
            raise ConfigError(
                self.probes_on[0].switch,
                True,
                f"the probes need labels, but {cfg.data.name} at {cfg.data.path} has "
                f"{data.num_classes} class; set {' and '.join(p.switch for p in logged.probes())} to false",
            )
        self.data = data.to(self.device)
        torch.manual_seed(cfg.train.seed)  # weights are initialised on the CPU: same start on any device
        self.model: MaskedImageModel = build_model(cfg, data.in_chans).to(self.device)
        # weight decay grouped as the method's authors do (mto.training.optim); momentum encoders and fixed
        # embeddings left out. The optimiser holds the groups and the state; TrainStep steps them.
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg.train.weight_decay), lr=0.0, betas=(0.9, 0.95))
        self.autocast = _autocast(self.device, cfg.train.precision)
        self.train_step = TrainStep(
            self.model,
            self.optimizer,
            cfg.train.grad_clip,
            self.autocast,
            compile_backend(cfg, self.device, backend),
            cuda_graphs=cfg.train.cuda_graphs,
        )
        self.generator = torch.Generator().manual_seed(cfg.train.seed)
        self.steps_per_epoch = n // cfg.train.batch_size
        self.model.configure_run(self.steps_per_epoch, cfg.train.epochs, self.data.mean, self.data.std)
        self.peak_lr = cfg.train.base_lr * cfg.train.batch_size / 256
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.finetune_epochs = cfg.eval.finetune.epochs_for(cfg.train.epochs)  # eval.finetune.at (none when off)
        self.finetune_pending: int | None = None  # a pre-training epoch checkpointed but not yet fine-tuned from
        self.eval_images, self.eval_mask = self._fixed_eval_batch()

    def _fixed_eval_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch (test images, one fixed mask) on which heterogeneity and affinity are measured."""
        g = torch.Generator().manual_seed(10_000 + self.cfg.train.seed)
        pick = stratified_subset(self.data.test_y, self.cfg.eval.hetero_batch, self.cfg.data.split_seed)
        mask = self.model.sample_mask(pick.numel(), g, torch.device("cpu")).to(self.device)
        return self.normalize(self.data.test_x[pick.to(self.device)]), mask

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images of this data set -> standardised float images on the device."""
        return normalize(x, self.data.mean, self.data.std)

    def fixed_batch(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` training images (normalised) and a seeded mask: a batch for timing and checks."""
        images = self.normalize(self.data.train_x[:n])
        mask = self.model.sample_mask(n, torch.Generator().manual_seed(seed), torch.device("cpu"))
        return images, mask.to(self.device)

    def step(
        self,
        images: torch.Tensor,
        mask: torch.Tensor,
        schedule: torch.Tensor | None = None,
        draws: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One optimisation step on a batch (``TrainStep``); returns the step's losses.

        ``schedule``: the step's ``schedule_row`` on the device (default: the current step's); ``draws``: the
        method's draws (default: its own for the current step).
        """
        if schedule is None:
            schedule = torch.tensor(self.schedule_row(self.model.steps_done), device=self.device)
        return self.train_step(images, mask, schedule, draws)

    def apply_gradients(self, grads: list[torch.Tensor], schedule: torch.Tensor) -> None:
        """The update of a step whose gradients were computed elsewhere (a fused unit's stacked backward): clip,
        AdamW, the method's own update, the tick. ``grads`` follow ``train_step.flat``."""
        self.train_step.update(grads, schedule)
        self.model.tick()

    # ---- one epoch's draws and steps (the loop over them is mto.training.unit's) --------------
    def schedule_row(self, step: int) -> list[float]:
        """What changes from step to step, at optimiser step ``step`` of the run: ``[learning rate, the lambda
        schedule's factor, *the method's clock]`` (``MaskedImageModel.clock_values``), pure functions of ``step``."""
        cfg, steps = self.cfg, self.steps_per_epoch
        lr = learning_rate(
            step, cfg.train.epochs * steps, cfg.train.warmup_epochs * steps, self.peak_lr, cfg.train.min_lr
        )
        factor = lambda_factor(cfg.mto.lambda_schedule, step / steps, cfg.train.epochs, cfg.mto.lambda_warmup_epochs)
        return [lr, factor, *self.model.clock_values(step)]

    def epoch_plan(self) -> EpochPlan:
        """This epoch's randomness and schedule, drawn and computed on the CPU and moved to the device once."""
        cfg, steps = self.cfg, self.steps_per_epoch
        n, first = steps * cfg.train.batch_size, self.epoch * steps
        order = torch.randperm(self.data.train_x.shape[0], generator=self.generator)[:n]
        crops = crop_params(n, min_scale=cfg.data.crop_min_scale, hflip=cfg.data.hflip, generator=self.generator)
        masks = self.model.sample_mask(n, self.generator, torch.device("cpu"))
        schedule = torch.tensor([self.schedule_row(first + s) for s in range(steps)], dtype=torch.float32)
        draws = self.model.step_draws(first, steps, cfg.train.batch_size)
        moved = [
            None if t is None else t.to(self.device, non_blocking=True) for t in (order, crops, masks, schedule, draws)
        ]
        return EpochPlan(*moved, last_lr=float(schedule[-1, 0]))

    def step_inputs(
        self, plan: EpochPlan, step: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Step ``step``'s augmented images, masks, schedule row and draws (views into the plan: no copy)."""
        images, mask = self.batch(plan, step)
        return images, mask, plan.schedule[step], None if plan.draws is None else plan.draws[step]

    def batch(self, plan: EpochPlan, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Step ``step``'s augmented images and masks."""
        sl = slice(step * self.cfg.train.batch_size, (step + 1) * self.cfg.train.batch_size)
        return augment(self.normalize(self.data.train_x[plan.order[sl]]), plan.crops[sl]), plan.masks[sl]

    # ---- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def features(self, images: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        self.model.eval()
        out = []
        for start in range(0, images.shape[0], chunk):
            with self.autocast:
                out.append(self.model.features(self.normalize(images[start : start + chunk])).float())
        return torch.cat(out)

    def probe(self) -> dict[str, float]:
        """The frozen-feature probes switched on (``mto.training.logged``: linear probe, kNN top-1): fitted on
        (a stratified subset of) the pre-training images, scored on the test split (``eval/*``) and the
        validation split (``val/*``). Nothing at all (no feature pass) when every probe is off."""
        cfg, d = self.cfg.eval, self.data
        on = self.probes_on
        if not on:
            return {}
        pick = stratified_subset(d.train_y, cfg.max_probe_train or d.train_y.numel(), self.cfg.data.split_seed)
        pick = pick.to(d.train_y.device)
        train_f, train_y = self.features(d.train_x[pick]), d.train_y[pick]
        splits = {logged.TEST_SPLIT: (self.features(d.test_x), d.test_y)}
        if d.val_x is not None:
            splits[logged.VALIDATION_SPLIT] = (self.features(d.val_x), d.val_y)
        metrics = {}
        for p in on:  # each fitted once, scored on each split
            score = p.scorer()(train_f, train_y, d.num_classes, cfg)
            names = {logged.TEST_SPLIT: p.name, logged.VALIDATION_SPLIT: p.validation}
            metrics.update({names[split]: score(x, y) for split, (x, y) in splits.items()})
        return metrics

    @torch.no_grad()
    def layer_profile(self, with_affinity: bool) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Heterogeneity of every layer of the MTO stack on the fixed batch (cosine, ``eval.hetero_tau``),
        and optionally the affinity maps of its first image, masked tokens first."""
        self.model.eval()
        tau = self.cfg.eval.hetero_tau
        with self.autocast:
            tokens = self.model.stack_tokens(self.eval_images, self.eval_mask).tokens
        metrics = {f"hetero/l{l:02d}": token_heterogeneity(x, self.eval_mask, tau).item() for l, x in tokens.items()}
        arrays = {}
        if with_affinity:
            order = masked_first_order(self.eval_mask[0])
            maps = [affinity_map(similarity(tokens[l][:1], tau))[0][order][:, order] for l in sorted(tokens)]
            arrays = {"affinity": torch.stack(maps).cpu().numpy(), "num_masked": np.array(int(self.eval_mask[0].sum()))}
        return metrics, arrays

    # ---- reports: the trainer counts its epochs and keeps its history ------------------------
    def start_report(self) -> EpochReport:
        """Epoch 0, the untrained model: every curve starts there (evaluations only)."""
        profile, _ = self.layer_profile(with_affinity=False)
        metrics = {**profile, **self.probe()}
        self.history.append({"epoch": 0.0, **metrics})
        due = self._finetune_due(0)
        return EpochReport(0, self.cfg.train.epochs, metrics, checkpoint=self.state_dict() if due else None)

    def epoch_report(self, metrics: dict[str, float], checkpoint: bool = False) -> EpochReport:
        """End the epoch just trained (its ``train/*`` and ``perf/*`` metrics): heterogeneity, probes when due, a
        checkpoint when due (or when ``checkpoint``)."""
        self.epoch += 1
        cfg, e = self.cfg, self.epoch
        profile, arrays = self.layer_profile(with_affinity=e in cfg.eval.affinity_epochs)
        metrics = {**metrics, **profile}
        if e % cfg.eval.every == 0 or e == cfg.train.epochs:
            metrics.update(self.probe())
        self.history.append({"epoch": float(e), **metrics})
        due = self._finetune_due(e) or checkpoint or e % cfg.train.checkpoint_every == 0 or e == cfg.train.epochs
        return EpochReport(e, cfg.train.epochs, metrics, arrays, self.state_dict() if due else None)

    def finetune_report(self) -> EpochReport:
        """Fine-tune a copy of the encoder from the pending epoch (``mto.training.finetune``), as that epoch's
        second report."""
        e = self.finetune_pending
        metrics, curve = finetune(self.cfg, self.model.encoder, self.data, from_epoch=e, autocast=self.autocast)
        self.finetune_pending = None
        next(h for h in self.history if h["epoch"] == e).update(metrics)
        return EpochReport(
            e, self.cfg.train.epochs, metrics, {"finetune_loss": np.asarray(curve)}, self.state_dict(), phase="finetune"
        )

    def _finetune_due(self, epoch: int) -> bool:
        """Mark ``epoch`` for fine-tuning when ``eval.finetune.at`` names it (its report then carries a checkpoint)."""
        if epoch in self.finetune_epochs:
            self.finetune_pending = epoch
        return self.finetune_pending == epoch

    # ---- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": list(self.history),
            "finetune_pending": self.finetune_pending,
            # what an exported encoder records with its weights (mto.training.encoder); not read back on resume
            "normalisation": {"mean": self.data.mean.cpu(), "std": self.data.std.cpu()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.train_step.init_state()
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        self.finetune_pending = state.get("finetune_pending")
