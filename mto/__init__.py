"""Masked Token Optimization (MTO) for SimMIM and MAE on timm Vision Transformers.

Three lines from a notebook::

    from mto import TrialConfig, run_trial
    result = run_trial(TrialConfig(), report=print)
    result.curve("eval/linear_top1")
"""

from mto.config import ConfigError, TrialConfig
from mto.train import EpochReport, NonFiniteLossError, TrialResult, run_trial

__all__ = ["ConfigError", "EpochReport", "NonFiniteLossError", "TrialConfig", "TrialResult", "run_trial"]
