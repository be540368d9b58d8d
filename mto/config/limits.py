"""The upper bound of every count a trial's settings hold, declared once: each is far above any published run,
and below what would run for practically ever or could not be allocated. Each field's own check names its bound
(``mto.config.errors.check``); a test walks every integer setting and sets it past its bound."""

from __future__ import annotations

MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit integer
MAX_EPOCHS = 100_000  # pre-training epochs (and any epoch count within them): 60x MAE's longest run (1,600)
MAX_FINETUNE_EPOCHS = 10_000  # fine-tuning epochs after one pre-training epoch: 30x DeiT's 300
MAX_BATCH = 65_536  # images in a batch (training, fine-tuning, heterogeneity): 2x the largest MIM batch (32k)
MAX_IMAGES = 10_000_000  # synthetic images made in memory
MAX_SUBSET = 1_000_000_000  # a cap on the images kept (data.max_train, eval.max_probe_train): above any data set
MAX_IMAGE_SIZE = 4_096  # pixels per side
MAX_WIDTH = 16_384  # a ViT's width, a decoder's or a projector's (ViT-22B: 6,144)
MAX_DEPTH = 1_024  # blocks of an encoder or a decoder, layers of a projector (ViT-22B: 48)
MAX_THREADS = 1_024  # CPU threads of one trial
MAX_STEPS = 1_000_000  # iterations of one optimisation inside an evaluation (the linear probe's L-BFGS)
MAX_NEIGHBOURS = 100_000  # the kNN probe's k
MAX_DRAWS = 64  # DTM's morphing draws per step (authors: 2)


def bounded(lo: int, hi: int) -> str:
    """What a bounded count allows, worded for an error message."""
    return f"an integer from {lo:,} to {hi:,}"
