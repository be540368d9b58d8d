"""Heterogeneity between masked and visible tokens, measured with entropy (docs/method.md).

For a masked token ``i`` the distribution ``p_i = softmax_{j in V}(S_ij)`` says how its
affinity spreads over the visible tokens; its entropy, normalised by ``log |V|``, is 1 when the
mask token singles out no visible token (singular, the property MTO enforces) and 0 when it
copies one visible token.

``heterogeneity`` is the definition on full ``N x N`` affinity logits. Training uses the
equivalent ``split`` form: with the same number of masked tokens ``M`` in every sample (both
masking schemes guarantee it), the masked rows and visible columns are gathered once, so only
the ``M x |V|`` block is ever computed, for all layers in one batched pass.
"""

from __future__ import annotations

import math

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


# ---- the split form used in training ---------------------------------------------------------
def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[..., b, index[b], :]`` for tokens ``x`` ``[..., B, N, D]`` and per-sample ``index`` ``[B, K]``.

    One ``index_select`` over the flattened batch (its backward is an ``index_add``).
    """
    b, k = index.shape
    flat = (index + torch.arange(b, device=index.device)[:, None] * x.shape[-2]).reshape(-1)
    rows = x.reshape(*x.shape[:-3], b * x.shape[-2], x.shape[-1]).index_select(-2, flat)
    return rows.view(*x.shape[:-3], b, k, x.shape[-1])


def masked_first_order(mask: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` token indices per sample with the masked tokens first (each group in raster order).

    Used to gather the masked/visible blocks in training and to order affinity maps for figures.
    """
    return torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)


def split_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Normalised entropy of each row's softmax over its last axis (the visible tokens)."""
    logp = logits.float().log_softmax(dim=-1)
    return -(logp.exp() * logp).sum(dim=-1) / math.log(max(logits.shape[-1], 2))


def split_heterogeneity(x: torch.Tensor, order: torch.Tensor, num_masked: int, tau: float) -> torch.Tensor:
    """Cosine heterogeneity of a stack of layers at once.

    Args:
        x: ``[K, B, N, D]`` tokens of K layers.
        order: ``masked_first_order(mask)``; num_masked: M, the same in every sample.
    Returns:
        ``[K]``: ``h`` of each layer (equal to ``heterogeneity(similarity(x[k], tau), mask)``).
    """
    x = x.float()
    xm, xv = gather_tokens(x, order[:, :num_masked]), gather_tokens(x, order[:, num_masked:])
    # Cosine = dot / (|a| |b|), with the norms applied on the small M x |V| block rather than by
    # normalising every token first: the same value at about half the cost.
    norm_m = torch.linalg.vector_norm(xm, dim=-1).clamp_min(1e-6)
    norm_v = torch.linalg.vector_norm(xv, dim=-1).clamp_min(1e-6)
    logits = (xm @ xv.transpose(-2, -1)) / (norm_m[..., :, None] * norm_v[..., None, :] * tau)
    return split_entropy(logits).mean(dim=(-2, -1))


def split_attention_heterogeneity(probs: torch.Tensor, order: torch.Tensor, num_masked: int) -> torch.Tensor:
    """Attention-affinity heterogeneity of a stack of layers: ``probs`` ``[K, B, N, N]`` head-averaged, patches only."""
    rows = gather_tokens(probs, order[:, :num_masked])  # masked queries
    block = gather_tokens(rows.transpose(-2, -1), order[:, num_masked:]).transpose(-2, -1)  # x visible keys
    p = block / block.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=-1) / math.log(max(block.shape[-1], 2))
    return entropy.mean(dim=(-2, -1))


def token_heterogeneity(x: torch.Tensor, mask: torch.Tensor, tau: float) -> torch.Tensor:
    """Heterogeneity of one layer's tokens ``[B, N, D]`` under cosine affinity (a scalar)."""
    return heterogeneity(similarity(x, tau), mask)
