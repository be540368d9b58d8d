"""Which trials may be fused into one stacked model (``mto.training.unit``) and how a list of them is grouped
into units: pure rules on configs.

Kept apart from ``mto.training.unit`` so that a study can be grouped and checked without importing torch.
"""

from __future__ import annotations

import json
from typing import Any

from mto.config import ConfigError, TrialConfig
from mto.config.dicts import flatten, to_dict
from mto.methods import registry

PER_TRIAL = ("train.seed", "train.base_lr", "train.min_lr", "train.weight_decay", "train.grad_clip")
LAMBDAS = ("mto.lambda_spa", "mto.lambda_e", "mto.lambda_r")  # per trial; which are zero must agree


def _shared(cfg: TrialConfig) -> dict[str, Any]:
    """The settings every member of a fused group must share, by dot path."""
    flat = flatten(to_dict(cfg))
    for path in PER_TRIAL:
        flat.pop(path)
    for path in LAMBDAS:
        flat[path] = flat[path] > 0  # which MTO losses are computed is structure; their weights are per trial
    return flat


def fusion_key(cfg: TrialConfig) -> str | None:
    """Trials with equal keys can be fused; None: this trial runs alone (its method is not fusable, or
    drop-path draws random numbers inside the forward, which one vmapped forward cannot do per trial)."""
    if not registry.get(cfg.mim.method).fusable or cfg.model.drop_path > 0:
        return None
    return json.dumps(_shared(cfg), sort_keys=True, default=str)


def check_fusable(configs: list[TrialConfig]) -> None:
    """Raise ConfigError naming the first setting that keeps ``configs`` from being fused."""
    if not registry.get(configs[0].mim.method).fusable:
        fusable = [m.name for m in registry.methods() if m.fusable]
        raise ConfigError("mim.method", configs[0].mim.method, f"one of {', '.join(fusable)} to fuse trials")
    if configs[0].model.drop_path > 0:
        raise ConfigError(
            "model.drop_path", configs[0].model.drop_path, "0 to fuse trials (no randomness in the forward)"
        )
    first = _shared(configs[0])
    for cfg in configs[1:]:
        for path, value in _shared(cfg).items():
            if value != first[path]:
                raise ConfigError(
                    path,
                    value,
                    f"{first[path]!r} as in the group's first trial: fused trials "
                    f"may differ only in {', '.join(PER_TRIAL + LAMBDAS)} (zero or not alike)",
                )


def fused_groups(configs: list[TrialConfig], k: int) -> list[list[int]]:
    """``configs`` (by index) partitioned into units, in order of each unit's first member: each alone, or with
    ``k`` > 1 up to ``k`` configs of one ``fusion_key``, taken in order."""
    open_groups: dict[str, list[int]] = {}
    groups: list[list[int]] = []
    for i, cfg in enumerate(configs):
        key = fusion_key(cfg) if k > 1 else None
        if key is None:
            groups.append([i])
            continue
        group = open_groups.get(key)
        if group is None or len(group) == k:
            group = open_groups[key] = []
            groups.append(group)
        group.append(i)
    return groups
