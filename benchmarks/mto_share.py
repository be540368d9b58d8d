"""One epoch of the CIFAR-sized trial (ViT-Tiny, 4x4 patches, 32x32 images) with SimMIM + MTO:
images/s, and the share of the training step that MTO takes.

    python benchmarks/mto_share.py

Images/s comes from ``run_trial``'s own ``perf/img_per_s`` (the last epoch; digits upsampled to
32x32 stand in for CIFAR, nothing is downloaded). The MTO share is ``1 - plain step / MTO step``,
both timed interleaved on the same batch, and the profiler's top operators of the MTO step are
printed. Meant for a GPU (bf16); on a CPU it runs the same code, slowly.
Prints ``RESULT mto_step_share <share>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torch.profiler import ProfilerActivity, profile  # noqa: E402

from benchmarks.harness import (  # noqa: E402
    arguments,
    as_built_report,
    describe,
    device,
    interleaved,
    sized_config,
    training_steps,
)
from mto.config import DataConfig, EvalConfig, ModelConfig, MTOConfig, TrainConfig, TrialConfig  # noqa: E402
from mto.training.trainer import Trainer  # noqa: E402
from mto.training.trial import run_trial  # noqa: E402

MTO = MTOConfig(lambda_e=0.1, lambda_r=0.1)


def cifar_sized(mto: MTOConfig, epochs: int) -> TrialConfig:
    return TrialConfig(
        data=DataConfig(image_size=32),
        model=ModelConfig(preset="vit_tiny", patch_size=4),
        mto=mto,
        train=TrainConfig(epochs=epochs, batch_size=256),
        eval=EvalConfig(every=epochs, linear=False, knn=False),
    )


def smoke_sized(mto: MTOConfig, epochs: int) -> TrialConfig:
    cfg = sized_config(mto=mto, smoke=True)
    cfg.train.epochs, cfg.eval = epochs, EvalConfig(every=epochs, linear=False, knn=False, hetero_batch=8)
    return cfg


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    dev = device()
    print(f"device {describe(dev)}")
    epochs = 1 if args.smoke else 2
    sized = smoke_sized if args.smoke else cifar_sized
    history = run_trial(sized(MTO, epochs), as_built_report).history
    print(
        f"SimMIM + MTO, {'smoke size' if args.smoke else 'ViT-Tiny/4 at 32x32, batch 256'}: "
        f"{history[-1]['perf/img_per_s']:.0f} img/s "
        f"(epoch {epochs}, {history[-1]['perf/epoch_s']:.1f} s)"
    )
    plain, mto = Trainer(sized(MTOConfig(), 1)), Trainer(sized(MTO, 1))
    steps = {"plain": training_steps(plain, args.steps), "mto": training_steps(mto, args.steps)}
    med = interleaved(steps, rounds=args.rounds, dev=dev)
    share = 1 - med["plain"] / med["mto"]
    print(f"step: plain {med['plain'] / args.steps * 1e3:.1f} ms, MTO {med['mto'] / args.steps * 1e3:.1f} ms")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        steps["mto"]()
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=12))
    print(f"RESULT mto_step_share {share:.3f}")


if __name__ == "__main__":
    main()
