"""The method library's error types for a trial's own failures (a config refused, a loss gone non-finite, a
GPU too small for its settings), and the checks that raise the first."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the field, the value and what is allowed."""

    def __init__(self, path: str, value: Any, allowed: str):
        self.path, self.value, self.allowed = path, value, allowed
        super().__init__(f"{path}={value!r} is invalid: {allowed}")

    def __reduce__(self):  # picklable, so it crosses process boundaries (Ray workers) intact
        return type(self), (self.path, self.value, self.allowed)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class GPUOutOfMemoryError(RuntimeError):
    """A trial's GPU ran out of memory: its settings (batch size, model) or its share of the GPU must change."""


def check(ok: bool, path: str, value: Any, allowed: str) -> None:
    """Raise ``ConfigError(path, value, allowed)`` unless ``ok``."""
    if not ok:
        raise ConfigError(path, value, allowed)


def check_choice(path: str, value: Any, choices: tuple[str, ...]) -> None:
    check(value in choices, path, value, f"expected one of {', '.join(choices)}")
