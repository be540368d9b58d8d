import os

import pytest
import torch

# Every Ray node a test starts (in this process or in a CLI it runs) listens on loopback only.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

torch.set_num_threads(2)


@pytest.fixture
def tiny_config():
    """A trial small enough for a CPU test: a 2-block ViT on 256 digits, 16x16."""
    from mto.config import DataConfig, EvalConfig, ModelConfig, TrainConfig, TrialConfig

    return TrialConfig(
        data=DataConfig(max_train=256),
        model=ModelConfig(embed_dim=32, depth=2, num_heads=2),
        train=TrainConfig(epochs=3, batch_size=64, warmup_epochs=1, base_lr=2e-3),
        eval=EvalConfig(every=1, probe_steps=30, hetero_batch=16),
    )


def pytest_collection_modifyitems(items):
    """The files holding slow end-to-end tests first, each file's tests in their own order: ``make test`` hands whole
    files to its two processes in this order, so both end on short unit tests together instead of one waiting for
    the other's last long study."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
