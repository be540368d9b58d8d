"""The config layer, the lowest of ``mto``: a trial's settings, torch-free, each field checked by its dataclass.

``trial`` holds ``TrialConfig`` and the sections every method shares, ``mim`` the method's settings (built from
the method descriptions of ``mto.methods.registry``, which belong to this layer), ``finetune`` the fine-tuning
evaluation's, ``depth`` the layer-depth schedules, ``dicts`` the plain-dict form (YAML, JSON, MLflow params),
``errors`` the error types, ``limits`` the bound of every count. This package exports what callers use.
"""

from mto.config.errors import ConfigError
from mto.config.finetune import FinetuneConfig
from mto.config.limits import MAX_EPOCHS, MAX_SEED
from mto.config.mim import MIMConfig
from mto.config.trial import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    MTOConfig,
    TrainConfig,
    TrialConfig,
    section,
    setting_defaults,
    validation_size,
)

__all__ = [
    "MAX_EPOCHS",
    "MAX_SEED",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "FinetuneConfig",
    "MIMConfig",
    "MTOConfig",
    "ModelConfig",
    "TrainConfig",
    "TrialConfig",
    "section",
    "setting_defaults",
    "validation_size",
]
