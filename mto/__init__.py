"""Masked Token Optimization (MTO) on timm Vision Transformers, for SimMIM, MAE, BootMAE, ConMIM and DTM.

Three lines from a notebook::

    from mto import TrialConfig, run_trial
    result = run_trial(TrialConfig(), report=print)
    result.curve("eval/linear_top1")
"""

from mto.config import ConfigError, TrialConfig

__all__ = ["ConfigError", "EpochReport", "NonFiniteLossError", "TrialConfig", "TrialResult", "run_trial"]


def __getattr__(name: str):
    # torch and timm load on first use of the trial loop, so validating a config (the suite's
    # study files) takes a fraction of a second
    if name in ("EpochReport", "NonFiniteLossError", "TrialResult", "run_trial"):
        from mto.training import trial

        return getattr(trial, name)
    raise AttributeError(f"module 'mto' has no attribute {name!r}")
