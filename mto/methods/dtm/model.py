"""Dynamic Token Morphing (DTM; Kim, Heo, Han, arXiv 2401.00254) on a timm ViT, with MTO on the encoder.

As in naver-ai/dtm: the encoder sees the masked view (mask tokens substituted before the position
embedding, as in SimMIM, so MTO acts on the encoder) and a linear head predicts a teacher's
token features of the whole image. Before the loss, the *target* tokens are morphed: ToMe's
bipartite soft matching on cosine similarity (alternating split, the ``r`` most similar pairs
merged, size-weighted, ``k`` iterations) groups them, and predictions and targets are both
averaged over each group. The number of merged tokens and of iterations is drawn afresh every
step, ``dtm_draws`` times; smooth-L1 (beta 2) over all tokens, averaged over the draws.

Our teacher is an EMA of the encoder (nothing is downloaded; the authors use CLIP), or a frozen
encoder from a local checkpoint (``mim.dtm_teacher``). The draws come from the model's own
per-step generator, so the batches and masks of every arm stay identical. docs/baselines.md.
"""

from __future__ import annotations

import math
import os
import zipfile

import torch
import torch.nn.functional as F
from torch import nn

from mto.config import MIMConfig, MTOConfig, TrialConfig
from mto.config.errors import ConfigError
from mto.data.datasets import channels
from mto.methods.attention import LayerCapture
from mto.methods.backbone import Encoder, create_vit
from mto.methods.momentum import cosine_momentum, ema_update, momentum_copy
from mto.methods.simmim.model import SimMIM

SMOOTH_L1_BETA = 2.0  # the authors' smooth_l1_loss(beta=2.0)


def bipartite_matching(
    tokens: torch.Tensor, r: int, protect_first: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ToMe's bipartite soft matching: which of the even tokens merge into which odd ones.

    Args:
        tokens: ``[B, T, C]``; even positions form set A, odd positions set B.
        r: merges, at most ``T // 2`` (``(T - 1) // 2`` with ``protect_first``).
        protect_first: ToMe's ``class_token=True``: token 0 never merges (its scores are ``-inf``) and the kept
            A-tokens stay in their order, so it stays first.
    Returns:
        ``src`` ``[B, r]`` A-indices merged (the ``r`` with the highest best cosine similarity),
        ``dst`` ``[B, r]`` their most similar B-index, ``unm`` ``[B, |A| - r]`` A-indices kept.
    """
    x = F.normalize(tokens.float(), dim=-1)
    scores = x[:, ::2] @ x[:, 1::2].transpose(1, 2)  # [B, |A|, |B|]
    if protect_first:
        scores[:, 0] = -math.inf
    best, best_idx = scores.max(dim=-1)
    order = best.argsort(dim=-1, descending=True)
    src, unm = order[:, :r], order[:, r:]
    return src, best_idx.gather(1, src), unm.sort(dim=1).values if protect_first else unm


def merge(values: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, unm: torch.Tensor, reduce: str) -> torch.Tensor:
    """Apply a matching to ``[B, T, C]`` values: kept A-tokens, then B-tokens with their sources reduced in."""
    a, b = values[:, ::2], values[:, 1::2]
    c = values.shape[-1]
    kept = a.gather(1, unm[..., None].expand(-1, -1, c))
    moved = a.gather(1, src[..., None].expand(-1, -1, c))
    return torch.cat([kept, b.scatter_reduce(1, dst[..., None].expand(-1, -1, c), moved, reduce=reduce)], dim=1)


@torch.no_grad()
def morph_groups(tokens: torch.Tensor, merges: int, iterations: int, protect_first: bool = False) -> torch.Tensor:
    """Token morphing: ``iterations`` rounds of bipartite matching, each merging ``merges`` tokens
    (at most half of those left, not counting a protected first token), on size-weighted averages of the
    tokens merged so far.

    Args:
        tokens: ``[B, N, C]`` target tokens.
    Returns:
        ``[B, G, N]`` 0/1 membership of each original token in each of the ``G`` groups; every
        token is in exactly one group (the identity when ``merges`` is 0).
    """
    b, n, _ = tokens.shape
    source = torch.eye(n, device=tokens.device).expand(b, n, n)
    x, size = tokens.float(), tokens.new_ones(b, n, 1, dtype=torch.float32)
    for _ in range(iterations):
        r = min(merges, (x.shape[1] - protect_first) // 2)
        if r <= 0:
            break
        src, dst, unm = bipartite_matching(x, r, protect_first)
        x = merge(x * size, src, dst, unm, "sum")
        size = merge(size, src, dst, unm, "sum")
        x = x / size
        source = merge(source, src, dst, unm, "amax")
    return source


def group_average(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Each token replaced by the mean of its group: ``S^T (S v / |S|)``. values ``[B, N, C]``, groups ``[B, G, N]``."""
    means = groups @ values.float() / groups.sum(-1, keepdim=True).clamp(min=1)
    return groups.transpose(1, 2) @ means


def standardize_tokens(x: torch.Tensor) -> torch.Tensor:
    """Each token ``[..., C]`` minus its mean over channels, over its (unbiased) std: the authors'
    ``--normalize_target``."""
    return (x - x.mean(dim=-1, keepdim=True)) / (x.var(dim=-1, keepdim=True) + 1e-6) ** 0.5


def morphed_loss(
    pred: torch.Tensor, target: torch.Tensor, groups: torch.Tensor, normalize_target: bool
) -> torch.Tensor:
    """Smooth-L1 (beta 2) between group-averaged predictions and targets (the latter standardised per
    token after averaging, if ``normalize_target``), mean over channels and tokens.

    Args:
        pred, target: ``[B, N, C]``; groups: ``[B, G, N]`` from ``morph_groups``.
    """
    target = group_average(target, groups)
    target = standardize_tokens(target) if normalize_target else target
    return F.smooth_l1_loss(group_average(pred, groups), target, beta=SMOOTH_L1_BETA)


def draw_morphing(generator: torch.Generator, max_merges: int, max_iterations: int) -> tuple[int, int]:
    """The authors' per-step draw: ``n ~ U{0..max_merges}`` tokens to merge over ``k ~ U{1..max_iterations}``
    iterations, ``r = ceil(n / k)`` per iteration (``floor`` when ``k ceil(n / k)`` would exceed the maximum).
    Returns ``(r, k)``."""
    n = int(torch.randint(0, max_merges + 1, (1,), generator=generator))
    k = int(torch.randint(1, max_iterations + 1, (1,), generator=generator))
    r = math.ceil(n / k)
    return (r if r * k <= max_merges else n // k), k


def load_teacher(encoder: Encoder, path: str) -> Encoder:
    """A frozen copy of ``encoder``'s architecture with the weights of a local checkpoint: a ViT
    state dict, or a trial checkpoint (``{"model": ...}``, its ``encoder.`` weights)."""
    if not os.path.isfile(path):
        raise ConfigError("mim.dtm_teacher", path, "an existing local checkpoint file (nothing is downloaded)")
    if not zipfile.is_zipfile(path):
        raise ConfigError("mim.dtm_teacher", path, "a checkpoint written by torch.save (this file is not one)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a file that is not a checkpoint
        raise ConfigError(
            "mim.dtm_teacher",
            path,
            f"a checkpoint torch.load reads ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160] if str(e) else 'unreadable'})",
        ) from None
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError("mim.dtm_teacher", path, "a state dict of tensors (a ViT's, or a trial checkpoint's)")
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    teacher = momentum_copy(encoder)
    try:
        teacher.load_state_dict(state)
    except RuntimeError as e:
        raise ConfigError(
            "mim.dtm_teacher", path, f"weights of the configured encoder ({str(e).splitlines()[0]})"
        ) from None
    return teacher.eval()


def check_teacher(cfg: TrialConfig) -> None:
    """Raise ConfigError unless ``mim.dtm_teacher`` holds weights of the trial's encoder (checked before any
    trial starts: the file is read memory-mapped into a freshly made encoder, then dropped)."""
    if cfg.mim.dtm_teacher is not None:
        encoder = create_vit(cfg.model, img_size=cfg.data.image_size, in_chans=channels(cfg.data))
        load_teacher(encoder, cfg.mim.dtm_teacher)


class DTM(SimMIM):
    """DTM: morphed token-feature regression against a teacher, MTO on the encoder blocks."""

    teachers = ("teacher",)  # the authors' CLIP teacher runs in eval mode; so do ours, EMA or frozen

    def __init__(self, encoder: Encoder, *, mim: MIMConfig, mto: MTOConfig):
        super().__init__(encoder, mim=mim, mto=mto)
        del self.decoder  # the target is the teacher's features
        dim = encoder.embed_dim
        self.head = nn.Linear(dim, dim)
        self.max_merges = min(mim.dtm_max_merges or self.num_patches, self.num_patches)
        self.max_iterations = mim.dtm_max_iterations or self.grid
        self.draws, self.normalize_target = mim.dtm_draws, mim.dtm_normalize_target
        self.protect_first = mim.dtm_protect_first
        self.momentum_range, self.frozen_teacher = mim.momentum_range, mim.dtm_teacher is not None
        self.teacher = load_teacher(encoder, mim.dtm_teacher) if self.frozen_teacher else momentum_copy(encoder).eval()

    @property
    def current_momentum(self) -> float:
        return cosine_momentum(self.steps_done, self.total_steps, *self.momentum_range)

    @torch.no_grad()
    def target(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's final patch tokens of the whole image ``[B, N, D]``."""
        return self.teacher.forward_features(images)[:, self.num_prefix :].float()

    def reconstruct(
        self, images: torch.Tensor, mask: torch.Tensor, *, token_layers: frozenset[int], prob_layers: frozenset[int]
    ) -> tuple[dict[str, torch.Tensor], list[LayerCapture]]:
        z, capture = self.encode_masked(images, mask, token_layers, prob_layers)
        pred, target = self.head(z), self.target(images)
        g = self.step_generator()
        losses = []
        for _ in range(self.draws):
            r, k = draw_morphing(g, self.max_merges, self.max_iterations)
            groups = morph_groups(target, r, k, self.protect_first)
            losses.append(morphed_loss(pred, target, groups, self.normalize_target))
        return {"loss_mim": torch.stack(losses).mean()}, [capture]

    def after_step(self) -> None:
        if not self.frozen_teacher:
            ema_update(self.teacher, self.encoder, self.current_momentum)
