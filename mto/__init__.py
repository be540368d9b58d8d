"""Masked Token Optimization (MTO) on timm Vision Transformers, for SimMIM, MAE, BootMAE, ConMIM and DTM.

Three lines from a notebook::

    from mto import TrialConfig, run_trial
    result = run_trial(TrialConfig(), report=print)
    result.curve("eval/linear_top1")

This module is the package's public surface, the one ``ablations`` imports from. Below it the layers point
one way, lowest first: ``config`` (the settings, with the methods' torch-free descriptions), ``data``,
``objective`` (MTO itself), ``methods`` (the models), ``training``; each imports only its own layer or lower.

- Settings, torch-free: ``TrialConfig``, ``MAX_EPOCHS``, ``MAX_SEED``, ``PRESETS``, ``section``,
  ``setting_defaults``, ``validation_size``, and the plain-dict form ``to_dict``, ``flatten``.
- Errors a trial or its config raises: ``ConfigError``, ``NonFiniteLossError``, ``GPUOutOfMemoryError``.
- The methods and how trials group, torch-free: ``registry`` (the methods by name), ``fused_groups``.
- The metrics a trial logs, declared once, torch-free: ``METRICS``, ``LINEAR_TOP1``, ``FINETUNE_TOP1``,
  ``VAL_FINETUNE_TOP1``, ``declared``, ``is_accuracy``, ``validation_twin``, ``why_absent`` (what the study
  checks, the contract and the report read).
- Whether a data set can be read, torch-free for the embedded digits: ``check_data``.
- The trial loop, loaded with torch on first use: ``run_trial``, ``run_unit``, ``EpochReport``, ``TrialResult``.
- A trial's encoder kept as timm's own files, loaded with torch on first use: ``save_encoder`` (from a trial's
  checkpoint), ``load_encoder`` (a timm model), ``encoder_config`` (its config.json), ``encoder_about``
  (what that says of its trial), ``finetune_encoder`` (``eval.finetune``'s recipe on any data set, no pre-training).
"""

import importlib

from mto.config import MAX_EPOCHS, MAX_SEED, ConfigError, TrialConfig, section, setting_defaults, validation_size
from mto.config.choices import PRESETS
from mto.config.dicts import flatten, to_dict
from mto.config.errors import GPUOutOfMemoryError, NonFiniteLossError
from mto.data.checks import check_data
from mto.methods import registry
from mto.training.fusable import fused_groups
from mto.training.logged import (
    FINETUNE_TOP1,
    LINEAR_TOP1,
    METRICS,
    VAL_FINETUNE_TOP1,
    declared,
    is_accuracy,
    validation_twin,
    why_absent,
)

# name -> its module: torch, timm and numpy load on first use of the trial loop, so validating a config
# (the suite's study files) takes a fraction of a second
_LAZY = {
    "EpochReport": "mto.training.reports",
    "TrialResult": "mto.training.reports",
    "encoder_about": "mto.training.encoder",
    "encoder_config": "mto.training.encoder",
    "finetune_encoder": "mto.training.encoder",
    "load_encoder": "mto.training.encoder",
    "run_trial": "mto.training.trial",
    "run_unit": "mto.training.unit",
    "save_encoder": "mto.training.encoder",
}

__all__ = [
    "FINETUNE_TOP1",
    "LINEAR_TOP1",
    "MAX_EPOCHS",
    "MAX_SEED",
    "METRICS",
    "PRESETS",
    "VAL_FINETUNE_TOP1",
    "ConfigError",
    "EpochReport",
    "GPUOutOfMemoryError",
    "NonFiniteLossError",
    "TrialConfig",
    "TrialResult",
    "check_data",
    "declared",
    "encoder_about",
    "encoder_config",
    "finetune_encoder",
    "flatten",
    "fused_groups",
    "is_accuracy",
    "load_encoder",
    "registry",
    "run_trial",
    "run_unit",
    "save_encoder",
    "section",
    "setting_defaults",
    "to_dict",
    "validation_size",
    "validation_twin",
    "why_absent",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mto' has no attribute {name!r}")
