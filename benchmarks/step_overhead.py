"""Training-step time with MTO divided by the plain method's: same model, same batch, one run.

    python benchmarks/step_overhead.py

For each method: plain, MTO soft (L_spa on all blocks + L_e early:2 + L_r all: explicit attention
maps everywhere) and MTO hard (attention mask + L_e + L_r: fused attention kept). Goal <= 1.10.
Prints one line per method and variant, then ``RESULT step_overhead_max <worst ratio>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import arguments, describe, device, interleaved, sized_config, training_steps  # noqa: E402
from mto.config import MTOConfig  # noqa: E402
from mto.methods import registry  # noqa: E402
from mto.training.trainer import Trainer  # noqa: E402

VARIANTS = {
    "plain": MTOConfig(),
    "soft": MTOConfig(lambda_spa=0.1, lambda_e=0.1, lambda_r=0.1, recalibration="soft", layers_spa="all"),
    "hard": MTOConfig(lambda_e=0.1, lambda_r=0.1, recalibration="hard"),
}


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    dev = device()
    print(f"device {describe(dev)}")
    worst = 0.0
    for method in registry.names():
        trainers = {v: Trainer(sized_config(method, mto, dev, smoke=args.smoke)) for v, mto in VARIANTS.items()}
        med = interleaved({v: training_steps(t, args.steps) for v, t in trainers.items()}, rounds=args.rounds, dev=dev)
        for v in ("soft", "hard"):
            ratio = med[v] / med["plain"]
            worst = max(worst, ratio)
            print(
                f"{method:8s} {v:5s} step {med[v] / args.steps * 1e3:8.2f} ms  plain "
                f"{med['plain'] / args.steps * 1e3:8.2f} ms  ratio {ratio:.3f}"
            )
    print(f"RESULT step_overhead_max {worst:.3f}")


if __name__ == "__main__":
    main()
