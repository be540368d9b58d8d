"""Layer-depth schedules, a setting of ``mto.*``: which layers an MTO loss covers, and with what weight."""

from __future__ import annotations

from typing import Any

from mto.config.errors import ConfigError

# A layer-depth schedule: "all", "none", "linear", "early:k", "exp:g", a list of layer
# indices (ints) or a list of per-layer weights (floats, one per layer 0..L).
LayerSchedule = str | list[int] | list[float]

_NAMED = "all, none, linear, early:k (k >= 1), exp:g (g > 0), a list of layer indices or a list of per-layer weights"


def check_layer_schedule(path: str, schedule: Any) -> None:
    """Raise ConfigError unless ``schedule`` is a well-formed layer-depth schedule (depth-independent checks)."""
    if isinstance(schedule, str):
        kind, _, arg = schedule.partition(":")
        try:
            if kind in ("all", "none", "linear") and not arg:
                return
            if kind == "early" and int(arg) >= 1:
                return
            if kind == "exp" and float(arg) > 0:
                return
        except ValueError:
            pass
        raise ConfigError(path, schedule, f"expected {_NAMED}")
    if isinstance(schedule, list) and schedule:
        if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in schedule):
            return
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in schedule):
            return
    raise ConfigError(path, schedule, f"expected {_NAMED} (non-negative, not empty)")


def check_layer_depth(path: str, schedule: LayerSchedule, num_layers: int, stack: str = "the stack") -> None:
    """Raise ConfigError unless ``schedule`` (well formed) names only layers of a stack of ``num_layers`` blocks
    (layers 0..L, 0 being its input): indices up to L, one weight per layer, ``early:k`` with k up to L + 1."""
    n = num_layers + 1
    blocks = f"{num_layers} block{'s' if num_layers != 1 else ''}"
    layers = f"layers 0 to {num_layers} ({stack} has {blocks}; layer 0 is its input)"
    if isinstance(schedule, list) and all(isinstance(v, int) for v in schedule):
        if any(i >= n for i in schedule):
            raise ConfigError(path, schedule, f"layer indices of {layers}")
    elif isinstance(schedule, list):
        if len(schedule) != n:
            raise ConfigError(path, schedule, f"{n} weights, one for each of {layers}")
    elif schedule.startswith("early:") and int(schedule.partition(":")[2]) > n:
        raise ConfigError(path, schedule, f"early:k with k from 1 to {n}, the {layers}")


def layer_weights(schedule: LayerSchedule, num_layers: int) -> list[float]:
    """Per-layer weights ``w_l`` for ``l = 0..L`` (0 = the initial embedding).

    Args:
        schedule: ``all``, ``none``, ``linear`` (1 at l=0 falling to 0 at l=L), ``early:k``
            (layers 0..k-1), ``exp:g`` (``g**l``), a list of layer indices (weight 1 each) or a
            list of L+1 weights.
        num_layers: L, the number of blocks; the result has L + 1 entries.
    """
    n = num_layers + 1
    check_layer_schedule("schedule", schedule)
    check_layer_depth("schedule", schedule, num_layers)
    if isinstance(schedule, list):
        if all(isinstance(v, int) for v in schedule):
            return [1.0 if l in schedule else 0.0 for l in range(n)]
        return [float(v) for v in schedule]
    kind, _, arg = schedule.partition(":")
    if kind == "all":
        return [1.0] * n
    if kind == "none":
        return [0.0] * n
    if kind == "linear":
        return [1.0 - l / num_layers for l in range(n)] if num_layers else [1.0]
    if kind == "early":
        return [1.0 if l < int(arg) else 0.0 for l in range(n)]
    return [float(arg) ** l for l in range(n)]  # exp:g
