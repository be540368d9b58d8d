"""The GPU-usage sampler of a trial: silent without CUDA, MLflow's system-metric names with it."""

import pytest
import torch

from ablations.contract import SYSTEM_PREFIX
from ablations.run.gpu_usage import GPUUsage


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_without_cuda_nothing_is_sampled_or_reported():
    usage = GPUUsage(interval=0.01)
    assert usage.monitor is None and usage.take() == {}
    usage.stop()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_with_cuda_each_take_reports_memory_and_utilisation():
    usage = GPUUsage(interval=0.05)
    torch.ones(1024, 1024, device="cuda").sum().item()
    import time

    time.sleep(0.3)
    out = usage.take()
    usage.stop()
    assert out[f"{SYSTEM_PREFIX}torch_peak_memory_megabytes"] > 0
    assert usage.monitor is None or f"{SYSTEM_PREFIX}gpu_0_utilization_percentage" in out
