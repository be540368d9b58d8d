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
