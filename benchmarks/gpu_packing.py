"""Trial packing on one GPU: aggregate images/s of 4 small trials sharing it, over one trial alone.

    python benchmarks/gpu_packing.py

Each trial is a separate process (as Ray runs trials with fractional ``resources.gpu: 0.25``)
training the CIFAR-sized ViT-Tiny/4 SimMIM + MTO configuration on the device-held data set.
Goal: >= 2.5. Without CUDA it says so and prints ``RESULT gpu_packing skipped``: that is
never a pass.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.harness import as_built_report, sized_config  # noqa: E402
from mto.config import EvalConfig, MTOConfig  # noqa: E402
from mto.training.trial import run_trial  # noqa: E402

EPOCHS = 4


def throughput(_: int) -> float:
    """Median training images/s over the epochs after the first (warm-up) of one trial."""
    cfg = sized_config(mto=MTOConfig(lambda_e=0.1, lambda_r=0.1), dev=torch.device("cuda"))
    cfg.train.epochs = EPOCHS
    cfg.eval = EvalConfig(every=EPOCHS, linear=False, knn=False)
    rates = [h["perf/img_per_s"] for h in run_trial(cfg, as_built_report).history[1:]]
    return statistics.median(rates)


def main() -> None:
    if not torch.cuda.is_available():
        print("no CUDA device here: gpu_packing needs one (this is not a pass)")
        print("RESULT gpu_packing skipped")
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        alone = pool.map(throughput, [0])[0]
    with ctx.Pool(4) as pool:
        packed = sum(pool.map(throughput, range(4)))
    print(f"{torch.cuda.get_device_name()}: one trial {alone:.0f} img/s, four sharing the GPU {packed:.0f} img/s")
    print(f"RESULT gpu_packing {packed / alone:.2f}")


if __name__ == "__main__":
    main()
