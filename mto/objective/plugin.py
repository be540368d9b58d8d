"""MTO as a plug-in objective on one stack of ViT blocks (docs/method.md).

``MTOObjective`` decides, from the config, which layers must be captured during the forward
pass (tokens for cosine heterogeneity, attention probabilities for L_spa or attention
affinity), supplies the hard recalibration mask, and turns a capture into the three losses.
It holds no parameters: the MIM model owns the mask token it optimises.
"""

from __future__ import annotations

import torch

from mto.config import MTOConfig
from mto.config.depth import layer_weights
from mto.objective.capture import LayerCapture
from mto.objective.heterogeneity import masked_first_order, split_attention_heterogeneity, split_heterogeneity
from mto.objective.losses import entropy_loss, rank_loss, spa_loss
from mto.objective.recalibration import hard_attention_mask, visible_to_masked_mass

LOSS_NAMES = ("loss_spa", "loss_e", "loss_r")


class MTOObjective:
    """The MTO losses for a stack of ``num_layers`` blocks (layers 0..L).

    Args:
        cfg: the MTO settings.
        num_layers: L, blocks in the stack MTO acts on.
    """

    def __init__(self, cfg: MTOConfig, num_layers: int):
        self.cfg = cfg
        self.num_layers = num_layers
        off = [0.0] * (num_layers + 1)
        self.w_e = layer_weights(cfg.layers_e, num_layers) if cfg.lambda_e > 0 else off
        self.w_r = layer_weights(cfg.layers_r, num_layers) if cfg.lambda_r > 0 else off
        use_spa = cfg.recalibration == "soft" and cfg.lambda_spa > 0
        self.w_spa = layer_weights(cfg.layers_spa, num_layers) if use_spa else off
        self.hetero_layers = frozenset(l for l in range(num_layers + 1) if self.w_e[l] > 0 or self.w_r[l] > 0)
        self.spa_layers = frozenset(l for l in range(1, num_layers + 1) if self.w_spa[l] > 0)
        if cfg.affinity == "cosine":
            self.token_layers, self.prob_layers = self.hetero_layers, self.spa_layers
        else:
            self.token_layers, self.prob_layers = frozenset(), self.hetero_layers | self.spa_layers

    def attn_mask(self, mask: torch.Tensor, num_prefix: int) -> torch.Tensor | None:
        """The hard recalibration mask ``[B, 1, T, T]``, or None when recalibration is not hard."""
        return hard_attention_mask(mask, num_prefix) if self.cfg.recalibration == "hard" else None

    def layer_heterogeneity(
        self, capture: LayerCapture, mask: torch.Tensor, num_prefix: int, num_masked: int
    ) -> dict[int, torch.Tensor]:
        """``h^l`` of every captured layer with the configured affinity, all layers in one batched pass."""
        order = masked_first_order(mask)
        if self.cfg.affinity == "cosine":
            layers = sorted(capture.tokens)
            h = split_heterogeneity(torch.stack([capture.tokens[l] for l in layers]), order, num_masked, self.cfg.tau)
        else:
            layers = sorted(self.hetero_layers)
            probs = torch.stack([capture.probs[l].float().mean(dim=1)[:, num_prefix:, num_prefix:] for l in layers])
            h = split_attention_heterogeneity(probs, order, num_masked)
        return dict(zip(layers, h.unbind(0)))

    def lambdas(self) -> torch.Tensor:
        """``[lambda_spa, lambda_e, lambda_r]``: a tensor, so that trials fused into one stacked model
        (``mto.training.unit``) each weigh their losses with their own lambdas."""
        return torch.tensor([self.cfg.lambda_spa, self.cfg.lambda_e, self.cfg.lambda_r], dtype=torch.float32)

    def losses(
        self,
        capture: LayerCapture,
        mask: torch.Tensor,
        num_prefix: int,
        num_masked: int,
        factor: float = 1.0,
        lambdas: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``loss_spa``, ``loss_e``, ``loss_r`` (unweighted) and ``loss_mto``, their lambda-weighted sum.

        Args:
            capture: what ``run_blocks`` kept for ``token_layers`` / ``prob_layers``.
            mask: ``[B, N]`` bool, True = masked; num_masked: masked tokens per sample (the same in each).
            factor: the epoch schedule's multiplier of every lambda.
            lambdas: ``[lambda_spa, lambda_e, lambda_r]`` (default: ``self.lambdas()``); which losses are
                computed at all follows the config, so a zero weight here only zeroes a computed loss.
        """
        cfg, zero = self.cfg, mask.new_zeros((), dtype=torch.float32)
        out = {name: zero for name in LOSS_NAMES}
        if self.hetero_layers:
            h = self.layer_heterogeneity(capture, mask, num_prefix, num_masked)
            h_all = [h.get(l, zero) for l in range(self.num_layers + 1)]
            if cfg.lambda_e > 0:
                out["loss_e"] = entropy_loss(h_all, self.w_e)
            if cfg.lambda_r > 0:
                out["loss_r"] = rank_loss(h_all, self.w_r, cfg.margin)
        if self.spa_layers:
            layers = sorted(self.spa_layers)
            mass = visible_to_masked_mass(
                torch.stack([capture.probs[l].float().mean(dim=1) for l in layers]), mask, num_prefix
            )
            per_layer = dict(zip(layers, mass.unbind(0)))
            out["loss_spa"] = spa_loss([per_layer.get(l, zero) for l in range(self.num_layers + 1)], self.w_spa)
        lam = (self.lambdas() if lambdas is None else lambdas).to(zero.device)
        out["loss_mto"] = factor * (lam[0] * out["loss_spa"] + lam[1] * out["loss_e"] + lam[2] * out["loss_r"])
        return out
