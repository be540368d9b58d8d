"""Heterogeneity between masked and visible tokens, measured with entropy (DESIGN.md 1.1).

For a masked token ``i`` the distribution ``p_i = softmax_{j in V}(S_ij)`` says how its
affinity spreads over the visible tokens; its entropy, normalised by ``log |V|``, is 1 when the
mask token singles out no visible token (singular, the property MTO enforces) and 0 when it
copies one visible token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity(x: torch.Tensor, tau: float) -> torch.Tensor:
    """Cosine similarity over temperature, ``S_ij = cos(x_i, x_j) / tau``.

    Args:
        x: ``[B, N, D]`` tokens.
    Returns:
        ``[B, N, N]`` logits.
    """
    xn = F.normalize(x.float(), dim=-1)
    return xn @ xn.transpose(1, 2) / tau


def attention_logits(probs: torch.Tensor) -> torch.Tensor:
    """Logits whose visible-restricted softmax equals the head-averaged attention, renormalised.

    Args:
        probs: ``[B, H, N, N]`` attention probabilities (or ``[B, N, N]``, already averaged).
    """
    if probs.dim() == 4:
        probs = probs.float().mean(dim=1)
    return probs.float().clamp_min(1e-12).log()


def affinity_map(logits: torch.Tensor) -> torch.Tensor:
    """Row-softmax affinity ``A = softmax_row(S)`` over all tokens, ``[B, N, N]``."""
    return logits.float().softmax(dim=-1)


def masked_row_entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalised entropy ``H_i`` of each row's softmax over the visible columns.

    Args:
        logits: ``[B, N, N]`` affinity logits (rows = queries, columns = keys).
        mask: ``[B, N]`` bool, True = masked.
    Returns:
        ``[B, N]`` entropies in [0, 1] (every row is computed; callers pick the masked ones).
    """
    visible = ~mask[:, None, :]
    logp = logits.float().masked_fill(~visible, float("-inf")).log_softmax(dim=-1)
    # Zero the masked columns before the product: 0 * -inf would give NaN gradients.
    logp = logp.masked_fill(~visible, 0.0)
    entropy = -(logp.exp() * logp).sum(dim=-1)
    num_visible = (~mask).sum(dim=-1, keepdim=True).clamp_min(2).float()
    return entropy / num_visible.log()


def heterogeneity(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``h = mean_{i in M} H_i`` per sample, averaged over the batch (a scalar in [0, 1]).

    Args:
        logits: ``[B, N, N]`` affinity logits of one layer (cosine/tau or attention logits).
        mask: ``[B, N]`` bool, True = masked.
    """
    entropy = masked_row_entropy(logits, mask)
    m = mask.float()
    per_sample = (entropy * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    return per_sample.mean()


def token_heterogeneity(x: torch.Tensor, mask: torch.Tensor, tau: float) -> torch.Tensor:
    """Heterogeneity of one layer's tokens ``[B, N, D]`` under cosine affinity."""
    return heterogeneity(similarity(x, tau), mask)

