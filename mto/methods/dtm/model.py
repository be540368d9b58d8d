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
from mto.methods.backbone import Encoder, create_vit
from mto.methods.initialisation import beit_layers_
from mto.methods.momentum import cosine_momentum, ema_update, momentum_copy
from mto.methods.simmim.model import SimMIM
from mto.objective.capture import LayerCapture

SMOOTH_L1_BETA = 2.0  # the authors' smooth_l1_loss(beta=2.0)


def _best_matches(x: torch.Tensor, protect_first: bool, live: torch.Tensor | None = None):
    """Each A-token's (even positions) best cosine similarity to a B-token (odd positions) and that B-index;
    ``live`` ``[N]`` bool excludes dead places (their scores are ``-inf``), as does ``protect_first`` token 0."""
    x = F.normalize(x.float(), dim=-1)
    scores = x[:, ::2] @ x[:, 1::2].transpose(1, 2)  # [B, |A|, |B|]
    if live is not None:
        scores = scores.masked_fill(~(live[::2, None] & live[None, 1::2]), -math.inf)
    if protect_first:
        scores[:, 0] = -math.inf
    return scores.max(dim=-1)


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
    best, best_idx = _best_matches(tokens, protect_first)
    order = best.argsort(dim=-1, descending=True)
    src, unm = order[:, :r], order[:, r:]
    return src, best_idx.gather(1, src), unm.sort(dim=1).values if protect_first else unm


def _merged(v: torch.Tensor, dst: torch.Tensor, moved: torch.Tensor, empty: bool = False) -> torch.Tensor:
    """A-values (even places), then B-values (odd places) with the moved A-values added at ``dst``; with
    ``empty`` the moved A-places are emptied (group memberships)."""
    va, vb = v[:, ::2], v[:, 1::2]
    vb = vb.scatter_add(1, dst[..., None].expand(-1, -1, v.shape[-1]), va * moved)
    return torch.cat([va * (1 - moved) if empty else va, vb], dim=1)


def _placed(v: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``v`` ``[B, N, C]`` with its places reordered by ``order`` ``[B, N]``."""
    return v.gather(1, order[..., None].expand(-1, -1, v.shape[-1]))


@torch.no_grad()
def morph_groups(
    tokens: torch.Tensor,
    merges: int | torch.Tensor,
    iterations: int | torch.Tensor,
    protect_first: bool = False,
    max_iterations: int | None = None,
) -> torch.Tensor:
    """Token morphing: ``iterations`` rounds of bipartite matching (``bipartite_matching``), each merging
    ``merges`` tokens (at most half of those left, not counting a protected first token), on size-weighted
    averages of the tokens merged so far.

    At static shapes, so that the per-step draws may be device tensors and a compiled step never recompiles:
    the ``N`` places keep their size, the tokens left first (A-tokens kept, in ToMe's order, then B-tokens)
    and the merged ones after them; ``max_iterations`` rounds always run (default ``iterations``, which must
    then be an int), those past ``iterations`` or with nothing to merge change nothing.

    Args:
        tokens: ``[B, N, C]`` target tokens; merges, iterations: ints or 0-d integer tensors.
    Returns:
        ``[B, N, N]`` 0/1 membership of each original token (columns) in each group (rows; rows of no group
        are zero); every token is in exactly one group (the identity when ``merges`` is 0).
    """
    b, n, _ = tokens.shape
    dev = tokens.device
    rounds = int(iterations) if max_iterations is None else max_iterations
    merges, iterations = (
        v if isinstance(v, torch.Tensor) else torch.tensor(v, device=dev) for v in (merges, iterations)
    )
    places = torch.arange(n, device=dev)
    a_places, b_places = places[::2], places[1::2]
    na = a_places.numel()
    x, size = tokens.float(), tokens.new_ones(b, n, 1, dtype=torch.float32)
    source = torch.eye(n, device=dev).expand(b, n, n)
    left = torch.full((), n, device=dev)  # tokens left, in places 0..left-1
    for i in range(rounds):
        r = torch.minimum(merges, (left - int(protect_first)) // 2).clamp(min=0) * (i < iterations)
        best, dst = _best_matches(x, protect_first, places < left)
        rank = best.argsort(dim=-1, descending=True).argsort(dim=-1)  # [B, |A|] place in ToMe's order
        merged = rank < r
        moved = merged[..., None].float()
        kept_a = rank if not protect_first else torch.arange(na, device=dev).expand(b, -1)
        key = torch.cat([kept_a, na + b_places.expand(b, -1)], dim=1)  # kept A in ToMe's order, then B
        alive = torch.cat([(a_places < left) & ~merged, (b_places < left).expand(b, -1)], dim=1)
        order = torch.where(alive, key, 2 * n + torch.cat([a_places, b_places])).argsort(dim=1, stable=True)
        summed = _placed(_merged(x * size, dst, moved), order)
        new_size = _placed(_merged(size, dst, moved), order)
        go = r > 0  # nothing merged: nothing moves (ToMe stops)
        x = torch.where(go, summed / new_size, x)
        size = torch.where(go, new_size, size)
        source = torch.where(go, _placed(_merged(source, dst, moved, empty=True), order), source)
        left = left - r
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
        beit_layers_(self.head)  # the authors' lm_head, under their model.apply(_init_weights)
        self.max_merges = min(mim.dtm_max_merges or self.num_patches, self.num_patches)
        self.max_iterations = mim.dtm_max_iterations or self.grid
        self.draws, self.normalize_target = mim.dtm_draws, mim.dtm_normalize_target
        self.protect_first = mim.dtm_protect_first
        self.momentum_range, self.frozen_teacher = mim.momentum_range, mim.dtm_teacher is not None
        self.teacher = load_teacher(encoder, mim.dtm_teacher) if self.frozen_teacher else momentum_copy(encoder).eval()

    def clock_values(self, step: int) -> list[float]:
        """``[momentum]`` of the EMA teacher at ``step`` (ConMIM's per-step cosine)."""
        return [cosine_momentum(step, self.total_steps, *self.momentum_range)]

    @property
    def current_momentum(self) -> float:
        return self.clock_values(self.steps_done)[0]

    def draw(self, generator: torch.Generator, batch: int) -> torch.Tensor:
        """``[dtm_draws, 2]`` integer ``(r, k)`` of each morphing draw of one step (``draw_morphing``)."""
        return torch.tensor([draw_morphing(generator, self.max_merges, self.max_iterations) for _ in range(self.draws)])

    @torch.no_grad()
    def target(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's final patch tokens of the whole image ``[B, N, D]``."""
        return self.teacher.forward_features(images)[:, self.num_prefix :].float()

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
        z, capture = self.encode_masked(images, mask, token_layers, prob_layers)
        pred, target = self.head(z), self.target(images)
        if draws is None:
            draws = self.draw(self.step_generator(), images.shape[0]).to(images.device)
        losses = []
        for r, k in draws.unbind(0):
            groups = morph_groups(target, r, k, self.protect_first, max_iterations=self.max_iterations)
            losses.append(morphed_loss(pred, target, groups, self.normalize_target))
        return {"loss_mim": torch.stack(losses).mean()}, [capture]

    def after_step(self, clock: torch.Tensor) -> None:
        if not self.frozen_teacher:
            ema_update(self.teacher, self.encoder, clock[0])
