"""What a study's shared compile cache saves: a compiled trial's first epoch in a fresh process, with
the cache cold and then warm (written by the first process).

    python benchmarks/compile_cache.py [--epochs 2] [--smoke]

``ablations.run`` points every trial of a study at one ``TORCHINDUCTOR_CACHE_DIR`` (under its storage
folder) with Inductor's FX-graph and AOTAutograd caches on, so a model shape is compiled by the first
trial and loaded by the others. This runs the same SimMIM + MTO trial (the benchmark size,
``train.compile: true``) in two fresh processes, one after the other, on one new cache folder, and
prints each one's first-epoch and later-epoch seconds. ``RESULT compile_cache_speedup <cold first
epoch / warm first epoch>``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import child_env  # noqa: E402

CHILD = """
import json, sys
from benchmarks.harness import as_built_report, sized_config
from mto.config import EvalConfig, MTOConfig
from mto.training.trial import run_trial
cfg = sized_config(mto=MTOConfig(lambda_e=0.1, lambda_r=0.1), smoke=sys.argv[2] == "smoke")
cfg.train.compile, cfg.train.epochs = True, int(sys.argv[1])
cfg.eval = EvalConfig(every=cfg.train.epochs, linear=False, knn=False, hetero_batch=16)
print(json.dumps([h["perf/epoch_s"] for h in run_trial(cfg, as_built_report).history if "perf/epoch_s" in h]))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="the smallest model: checks that it runs")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = child_env(
            TORCHINDUCTOR_CACHE_DIR=cache, TORCHINDUCTOR_FX_GRAPH_CACHE="1", TORCHINDUCTOR_AUTOGRAD_CACHE="1"
        )
        epochs = {}
        for run in ("cold", "warm"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(args.epochs), "smoke" if args.smoke else "full"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            epochs[run] = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{run}: first epoch {epochs[run][0]:.1f} s, later epochs "
                + ", ".join(f"{s:.1f}" for s in epochs[run][1:])
                + " s"
            )
    print(f"RESULT compile_cache_speedup {epochs['cold'][0] / epochs['warm'][0]:.2f}")


if __name__ == "__main__":
    main()
