"""A trial's GPU utilisation and memory, sampled where it trains and reported with each epoch's metrics.

On a machine with CUDA, a thread in the trial's process samples every GPU once a second with MLflow's own
system-metrics GPU monitor (``nvidia-ml-py``), and each epoch's report carries the means since the last one
as ``system/gpu_<i>_utilization_percentage``, ``system/gpu_<i>_memory_usage_megabytes`` and the rest of
that monitor's names (MLflow's ``system/`` prefix), with PyTorch's own peak allocation
(``system/torch_peak_memory_megabytes``). The driver writes them to the trial's MLflow run like every other
metric, so the UI shows, epoch by epoch, whether a study keeps the GPU busy. Without CUDA nothing is sampled.
"""

from __future__ import annotations

import threading

from ablations.contract import SYSTEM_PREFIX

INTERVAL_S = 1.0  # NVML's utilisation is itself a mean over about a second


class GPUUsage:
    """Samples in a daemon thread until ``stop``; ``take`` returns the means since the last ``take``."""

    def __init__(self, interval: float = INTERVAL_S):
        import torch  # in the trial's process only: the driver never imports torch

        self.monitor = None
        if torch.cuda.is_available():
            try:
                from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor

                self.monitor = GPUMonitor()
            except (ImportError, RuntimeError):  # nvidia-ml-py missing, or NVML cannot start: memory only
                self.monitor = None
        self.lock, self.done = threading.Lock(), threading.Event()
        if self.monitor is not None:
            threading.Thread(target=self._sample, args=(interval,), daemon=True, name="gpu-usage").start()

    def _sample(self, interval: float) -> None:
        while not self.done.wait(interval):
            with self.lock:
                self.monitor.collect_metrics()

    def take(self) -> dict[str, float]:
        """``system/*`` means since the last call (empty without CUDA)."""
        import torch

        if not torch.cuda.is_available():
            return {}
        out = {f"{SYSTEM_PREFIX}torch_peak_memory_megabytes": torch.cuda.max_memory_allocated() / 1e6}
        torch.cuda.reset_peak_memory_stats()
        if self.monitor is not None:
            with self.lock:
                if self.monitor.metrics:
                    out.update({f"{SYSTEM_PREFIX}{k}": v for k, v in self.monitor.aggregate_metrics().items()})
                self.monitor.clear_metrics()
        return out

    def stop(self) -> None:
        self.done.set()
