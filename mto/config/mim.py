"""Settings of the masked image modeling method MTO plugs into (``mim``): the method, its mask ratio, and
every method's own settings. Each method's settings are dataclasses in its folder of ``mto.methods``
(its registry entry names them); ``MIMConfig`` is made of all of them, so a study sets any of them under
``mim``. Defaults are the authors' values where they suit a CIFAR-sized run (docs/baselines.md).
Torch-free, like every config module.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from mto.config.errors import check as _check
from mto.config.errors import check_choice as _check_choice
from mto.methods import registry


@dataclass
class MIMConfig(*registry.settings_classes()):
    """The masked image modeling method MTO is plugged into, and its settings."""

    __pydantic_config__ = {"extra": "forbid"}
    method: str = registry.DEFAULT
    mask_ratio: float = 0.6

    def __post_init__(self) -> None:
        _check_choice("mim.method", self.method, registry.names())
        _check(0 < self.mask_ratio < 1, "mim.mask_ratio", self.mask_ratio, "a number strictly between 0 and 1")
        for settings in registry.settings_classes():
            settings.check(self)
        for f in fields(self):  # a method's own optional setting, set while another method runs
            owners = registry.owners(f.name)
            if f.default is None and getattr(self, f.name) is not None and owners and self.method not in owners:
                _check(
                    False, f"mim.{f.name}", getattr(self, f.name), f"null unless mim.method is {' or '.join(owners)}"
                )

    def option(self, name: str):
        """Setting ``name`` as set, else the method's authors' value (its registry entry's ``defaults``)."""
        value = getattr(self, name)
        return registry.get(self.method).defaults.get(name) if value is None else value

    @property
    def momentum_range(self) -> tuple[float, float]:
        """(start, end) of the momentum schedule: the configured values, else the method's published ones."""
        start, end = registry.get(self.method).momentum or (0.996, 1.0)
        start = start if self.momentum is None else self.momentum
        end = max(start, end) if self.momentum_end is None else self.momentum_end
        return start, end
