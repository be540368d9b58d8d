"""Kernels one training step launches, eager and compiled, per method: the launch cost a CPU can count.

    python benchmarks/step_kernels.py [--methods simmim,mae] [--smoke]

(``--smoke``: the smallest model, and SimMIM only unless ``--methods`` says otherwise.)

A step is launch-bound when the host dispatches kernels more slowly than the device runs them, so the
count of launches per step is the figure to drive down. Per method, with MTO off and on (L_e + L_r):

- eager: the aten operations one whole step dispatches (forward, backward, AdamW, the method's own update),
  counted with a ``TorchDispatchMode``; eagerly each is at least one kernel launch;
- compiled: the kernels Inductor generates for the whole step, one graph
  (``torch._inductor.metrics.generated_kernel_count``); library calls it keeps (matrix products, attention)
  launch besides them. On CUDA the compiled step is replayed as one CUDA graph, and the profiler's count of
  launches per replayed step is printed too.

Last line: ``RESULT step_kernels_compiled_max <most kernels generated for one compiled step>``.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch._inductor.metrics as inductor_metrics  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from benchmarks.harness import arguments, describe, device, sized_config, sync, training_steps  # noqa: E402
from mto.config import MTOConfig  # noqa: E402
from mto.methods import registry  # noqa: E402
from mto.training.trainer import Trainer  # noqa: E402

VARIANTS = {"plain": MTOConfig(), "mto": MTOConfig(lambda_e=0.1, lambda_r=0.1)}


class OpCounter(TorchDispatchMode):
    """Counts every aten operation dispatched while it is active (backward and optimiser included)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def launches(step, dev: torch.device) -> int:
    """CUDA kernel and graph launches of one call of ``step``, from the profiler (CUDA only)."""
    sync(dev)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        sync(dev)
    names = ("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch", "cudaLaunchKernelExC", "cuLaunchKernelEx")
    return sum(e.count for e in prof.key_averages() if e.key in names)


def main() -> None:
    args = arguments(__doc__.splitlines()[0], methods=True)
    dev = device()
    print(f"device {describe(dev)}", flush=True)
    worst = 0
    methods = args.methods or ([registry.DEFAULT] if args.smoke else registry.names())  # compiling costs
    for method in methods:
        for variant, mto in VARIANTS.items():
            cfg = sized_config(method, mto, dev, smoke=args.smoke)
            eager = Trainer(cfg)
            step = training_steps(eager, 1)
            step()  # the first step makes the optimiser state
            with OpCounter() as counter:
                step()
            ops = sum(counter.ops.values())
            cfg.train.compile = True
            compiled = Trainer(cfg)
            inductor_metrics.reset()
            compiled_step = training_steps(compiled, 1)
            compiled_step()  # compiles the whole step
            kernels = inductor_metrics.generated_kernel_count
            worst = max(worst, kernels)
            line = f"{method:8s} {variant:5s} eager {ops:5d} aten ops per step; compiled {kernels:4d} generated kernels"
            if dev.type == "cuda":
                compiled_step()  # CUDA graphs record on the second call and replay from the third
                line += f"; launches per step: eager {launches(step, dev)}, compiled {launches(compiled_step, dev)}"
            print(line, flush=True)
    print(f"RESULT step_kernels_compiled_max {worst}")


if __name__ == "__main__":
    main()
