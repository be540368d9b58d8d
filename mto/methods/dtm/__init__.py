"""Dynamic Token Morphing (DTM; Kim, Heo, Han, arXiv 2401.00254): morphed token features regressed
against a teacher (an EMA of the encoder, or a frozen encoder read from a file)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mto.config.errors import check
from mto.config.limits import MAX_DRAWS, MAX_IMAGE_SIZE, bounded
from mto.methods.registry import Method, load, register
from mto.methods.shared import BlockMaskSettings, MomentumSettings

if TYPE_CHECKING:  # annotations only: mto.config imports this module
    from mto.config import TrialConfig


@dataclass
class DTMSettings:
    # per step, draw n merged tokens in 0..dtm_max_merges and k iterations in 1..dtm_max_iterations
    # (the authors' n1 = 196, k1 = 14 for 196 patches), dtm_draws times (their L = 2)
    dtm_max_merges: int | None = None  # None: all patches
    dtm_max_iterations: int | None = None  # None: patches per side
    dtm_draws: int = 2
    dtm_teacher: str | None = None  # path of a frozen teacher encoder (torch.load, never downloaded); None: EMA
    dtm_normalize_target: bool = True  # per-token standardised targets (authors' --normalize_target)
    dtm_protect_first: bool = True  # ToMe's class_token=True on patch tokens, as the authors call it: the
    #   first patch is never merged and at most (N - 1) // 2 tokens merge per iteration

    def check(self) -> None:
        for name in ("dtm_max_merges", "dtm_max_iterations"):
            v = getattr(self, name)
            most = MAX_IMAGE_SIZE**2  # one token per pixel at most
            check(v is None or 1 <= v <= most, f"mim.{name}", v, f"{bounded(1, most)}, or null")
        check(1 <= self.dtm_draws <= MAX_DRAWS, "mim.dtm_draws", self.dtm_draws, bounded(1, MAX_DRAWS))
        check(
            self.dtm_teacher is None or bool(self.dtm_teacher),
            "mim.dtm_teacher",
            self.dtm_teacher,
            "a local checkpoint path, or null",
        )


def check_teacher_file(cfg: TrialConfig) -> None:
    """The teacher file holds weights of the trial's encoder (read before a study starts; torch only when set:
    the check builds the encoder, so it is the model's)."""
    if cfg.mim.dtm_teacher is not None:
        load("mto.methods.dtm.model:check_teacher")(cfg)


register(
    Method(
        "dtm",
        "mto.methods.dtm.model:DTM",
        mto_on="encoder",
        masking="block",
        summary="DTM (Kim et al., arXiv 2401.00254)",
        momentum=(0.996, 1.0),  # ConMIM's schedule for our EMA teacher
        settings=(BlockMaskSettings, MomentumSettings, DTMSettings),
        preflight=check_teacher_file,
    )
)
