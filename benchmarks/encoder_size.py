"""What ``tracking.encoder: last`` keeps per trial: the size of the encoder folder a trial logs (``mto.save_encoder``:
model.safetensors and config.json), for each model preset at its study's data size.

    python benchmarks/encoder_size.py

The ready studies' encoders (CIFAR-10, 32x32, patch 4, 3 channels) and the quickstart's (digits, 16x16, patch 2,
1 channel), each built, saved and measured on disk. ``RESULT encoder_mb_vit_tiny <MB>``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from mto import save_encoder  # noqa: E402
from mto.config import DataConfig, ModelConfig, TrialConfig  # noqa: E402
from mto.config.choices import PRESETS  # noqa: E402
from mto.methods.backbone import create_vit  # noqa: E402

SIZES = {"quickstart": (16, 2, 1), "studies": (32, 4, 3)}  # image size, patch size, channels


def kept_mb(preset: str, image: int, patch: int, chans: int) -> tuple[float, int]:
    """(MB on disk of the encoder folder, parameters) of a preset's encoder."""
    cfg = TrialConfig(data=DataConfig(image_size=image), model=ModelConfig(preset=preset, patch_size=patch))
    vit = create_vit(cfg.model, img_size=image, in_chans=chans)
    state = {
        "epoch": 0,
        "model": {f"encoder.{k}": v for k, v in vit.state_dict().items()},
        "normalisation": {"mean": torch.zeros(chans), "std": torch.ones(chans)},
    }
    with tempfile.TemporaryDirectory() as folder:
        save_encoder(cfg, state, folder)
        size = sum(p.stat().st_size for p in Path(folder).iterdir())
    return size / 1e6, sum(p.numel() for p in vit.parameters())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="the small presets only: checks that it runs")
    args = p.parse_args()
    presets = ["tiny", "vit_tiny"] if args.smoke else list(PRESETS)
    sizes = {}
    for preset in presets:
        image, patch, chans = SIZES["quickstart" if preset == "tiny" else "studies"]
        sizes[preset], params = kept_mb(preset, image, patch, chans)
        print(f"{preset}: {params / 1e6:.2f} M parameters, {sizes[preset]:.1f} MB ({image}x{image}, patch {patch})")
    print(f"RESULT encoder_mb_vit_tiny {sizes['vit_tiny']:.1f}")


if __name__ == "__main__":
    main()
