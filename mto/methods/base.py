"""The shared base of the MIM models, the pixel and feature helpers they share, and ``build_model``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from mto.config import MTOConfig, TrialConfig
from mto.methods import registry
from mto.methods.attention import run_blocks
from mto.methods.backbone import Encoder, create_vit
from mto.methods.initialisation import beit_normal_, init_encoder
from mto.objective.capture import LayerCapture
from mto.objective.plugin import MTOObjective


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, N, patch*patch*C]`` in raster order (the MAE layout)."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def encode_patches(vit: Encoder, images: torch.Tensor) -> torch.Tensor:
    """Mean-pooled patch tokens of the final (normed) layer, ``[B, D]``: the probes' features."""
    x = vit.forward_features(images)
    return x[:, vit.num_prefix_tokens :].mean(dim=1)


class MaskedImageModel(nn.Module, ABC):
    """A MIM method with MTO plugged into the stack of blocks where mask tokens live.

    Subclasses define ``sample_mask``, ``reconstruct`` (the MIM loss plus the MTO stack's
    capture) and ``stack_tokens``; this base adds the MTO losses, so with all lambdas 0 and
    no hard mask the loss is exactly the plain method's.
    """

    num_prefix: int  # prefix tokens in the MTO stack
    num_masked: int  # masked patches per sample: the same in every sample, by construction of the masks
    teachers: tuple[str, ...] = ()  # submodules that make targets: always in eval mode (no drop-path, no dropout)
    # Parameters the authors' optimiser does not decay beyond 1-D ones and biases (their no_weight_decay();
    # mto.training.optim): SimMIM, BootMAE, ConMIM and DTM skip {pos_embed, cls_token}; MAE skips nothing.
    decay_exempt: tuple[str, ...] = ("encoder.cls_token", "encoder.pos_embed")
    init_scheme = "beit"  # the encoder's initialisation (mto.methods.initialisation): its authors' code's

    def __init__(self, encoder: Encoder, mto: MTOConfig, num_mto_layers: int):
        super().__init__()
        init_encoder(encoder, self.init_scheme)  # before any method copies it (momentum encoders)
        self.encoder = encoder
        self.objective = MTOObjective(mto, num_mto_layers)
        self.patch_size = encoder.patch_embed.patch_size[0]
        self.grid = encoder.patch_embed.grid_size[0]
        # The training clock (momentum and loss-weight schedules) and the seed of the method's own
        # randomness. Plain Python numbers, kept in the state dict (``get_extra_state``) so a resumed
        # trial continues exactly; Trainer sets the run's length with ``configure_run``.
        self.steps_done, self.steps_per_epoch, self.epochs = 0, 1, None
        self.seed = torch.initial_seed()  # Trainer seeds torch with train.seed right before building
        in_chans = encoder.patch_embed.proj.in_channels
        self.register_buffer("pixel_mean", torch.zeros(in_chans), persistent=False)
        self.register_buffer("pixel_std", torch.ones(in_chans), persistent=False)
        self.register_buffer("mto_lambdas", self.objective.lambdas(), persistent=False)  # per trial when fused

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @abstractmethod
    def sample_mask(self, batch: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """``[B, N]`` bool mask, True = masked."""

    @abstractmethod
    def reconstruct(
        self,
        images: torch.Tensor,
        mask: torch.Tensor,
        *,
        token_layers: frozenset[int],
        prob_layers: frozenset[int],
        clock: torch.Tensor | None = None,
        draws: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], list[LayerCapture]]:
        """The method's own losses (``loss_mim`` and any parts) and the capture of each MTO stack
        (one for most methods; BootMAE has two decoders). ``clock`` and ``draws``: see ``forward``."""

    def forward(
        self,
        images: torch.Tensor,
        mask: torch.Tensor,
        lambda_factor: float | torch.Tensor = 1.0,
        *,
        clock: torch.Tensor | None = None,
        draws: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """All losses of one step: ``loss`` (to minimise), ``loss_mim``, ``loss_spa``, ``loss_e``, ``loss_r``.

        Args:
            lambda_factor: the lambda schedule's multiplier (a device tensor in training).
            clock: the method's schedule values at this step (``clock_values``), a device tensor; None: the
                current step's, computed here.
            draws: the method's random draws for this step (``draw``); None: drawn here.
        """
        obj = self.objective
        parts, captures = self.reconstruct(
            images, mask, token_layers=obj.token_layers, prob_layers=obj.prob_layers, clock=clock, draws=draws
        )
        per_stack = [
            obj.losses(c, mask, self.num_prefix, self.num_masked, lambda_factor, self.mto_lambdas) for c in captures
        ]
        mto = {k: sum(s[k] for s in per_stack) / len(per_stack) for k in per_stack[0]}  # mean over stacks
        loss_mto = mto.pop("loss_mto")
        # Inactive MTO adds nothing at all, so the loss is bit-for-bit the plain method's.
        loss = parts["loss_mim"] + loss_mto if obj.cfg.active else parts["loss_mim"]
        return {"loss": loss, **parts, **mto}

    def train(self, mode: bool = True) -> MaskedImageModel:
        """``nn.Module.train``, with the teachers left in eval mode: a target is the same however often it is
        computed."""
        super().train(mode)
        for name in self.teachers:
            getattr(self, name).eval()
        return self

    def on_step_end(self) -> None:
        """After an optimiser step taken outside ``TrainStep``: the method's own update at the current clock, then
        the tick."""
        self.after_step(self.clock())
        self.tick()

    def tick(self) -> None:
        """One optimiser step done: the training clock advances (on the host, after the step)."""
        self.steps_done += 1

    def after_step(self, clock: torch.Tensor) -> None:
        """A method's own update after each optimiser step (momentum encoders), with its ``clock`` of that step."""

    def configure_run(self, steps_per_epoch: int, epochs: int, mean: torch.Tensor, std: torch.Tensor) -> None:
        """The run's length (for the schedules) and the data set's per-channel normalisation ``[C]``
        (for augmentations defined on pixels, like ConMIM's colour jitter)."""
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.pixel_mean.copy_(mean.to(self.pixel_mean))
        self.pixel_std.copy_(std.to(self.pixel_std))

    @property
    def total_steps(self) -> int | None:
        return self.epochs * self.steps_per_epoch if self.epochs else None

    def clock_values(self, step: int) -> list[float]:
        """The method's own schedule values at optimiser step ``step`` (momentum rates, loss-weight ramps),
        computed on the host; they reach the training step as a device tensor (``Trainer.schedule_row``), so a
        compiled step never reads a Python number that changes. None for SimMIM and MAE."""
        return []

    def clock(self, step: int | None = None) -> torch.Tensor:
        """``clock_values`` of ``step`` (default: the current step) as a tensor on the model's device."""
        values = self.clock_values(self.steps_done if step is None else step)
        return torch.tensor(values, dtype=torch.float32, device=self.pixel_mean.device)

    def step_generator(self, step: int | None = None) -> torch.Generator:
        """A CPU generator for a step's own draws (augmentations, DTM's merge counts), seeded from
        (seed, step; default the current step): the batches and masks the trainer draws stay those of every
        other arm."""
        step = self.steps_done if step is None else step
        return torch.Generator().manual_seed((self.seed * 1_000_003 + step) % 2**63)

    def draw(self, generator: torch.Generator, batch: int) -> torch.Tensor | None:
        """The method's own random draws for one step of ``batch`` images, from ``generator``; None when it draws
        nothing (SimMIM, MAE, BootMAE)."""
        return None

    def step_draws(self, first_step: int, steps: int, batch: int) -> torch.Tensor | None:
        """``draw`` of each of ``steps`` steps from ``first_step`` on, stacked ``[steps, ...]`` on the CPU (the
        trainer moves an epoch's draws to the device at once)."""
        rows = [self.draw(self.step_generator(first_step + s), batch) for s in range(steps)]
        return None if not rows or rows[0] is None else torch.stack(rows)

    def get_extra_state(self) -> dict[str, Any]:
        return {"steps_done": self.steps_done, "seed": self.seed}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.steps_done, self.seed = int(state["steps_done"]), int(state["seed"])

    def stack_tokens(self, images: torch.Tensor, mask: torch.Tensor) -> LayerCapture:
        """Patch tokens of every layer 0..L of the (first) MTO stack, for heterogeneity profiles and affinity maps."""
        everything = frozenset(range(self.objective.num_layers + 1))
        return self.reconstruct(images, mask, token_layers=everything, prob_layers=frozenset())[1][0]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen features for the probes: the encoder on the whole image, ``[B, D]``."""
        return encode_patches(self.encoder, images)

    def run_stack(
        self,
        blocks: nn.ModuleList,
        x: torch.Tensor,
        mask: torch.Tensor,
        token_layers: frozenset[int],
        prob_layers: frozenset[int],
        cross: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None,
        bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, LayerCapture]:
        """Run the MTO stack with the hard recalibration mask (if any), the encoder's position bias (``bias``,
        when the stack is the encoder) and the requested captures."""
        return run_blocks(
            blocks,
            x,
            num_prefix=self.num_prefix,
            attn_mask=self.objective.attn_mask(mask, self.num_prefix),
            bias=bias,
            token_layers=token_layers,
            prob_layers=prob_layers,
            cross=cross,
        )


def new_mask_token(dim: int) -> nn.Parameter:
    """A mask token as SimMIM's, ConMIM's, DTM's and BootMAE's authors draw it (BEiT's truncated normal)."""
    token = nn.Parameter(torch.zeros(1, 1, dim))
    beit_normal_(token)
    return token


def build_model(cfg: TrialConfig, in_chans: int) -> MaskedImageModel:
    """The configured MIM method (its registry entry's model) on a fresh timm ViT, with MTO plugged in where
    its mask tokens live."""
    encoder = create_vit(cfg.model, img_size=cfg.data.image_size, in_chans=in_chans)
    return registry.get(cfg.mim.method).model_class()(encoder, mim=cfg.mim, mto=cfg.mto)
