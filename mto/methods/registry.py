"""The MIM methods by name, each described once, torch-free, and registered the way timm registers models.

A method is a folder of ``mto.methods``: its ``__init__`` registers a ``Method`` (what MTO acts on, how it
masks, whether trials of it can be fused, its momentum defaults, its own settings, whose dataclasses check
their fields), and its ``model.py`` holds the model class the description names. Every other module asks
the registry; none names a method. The settings dataclasses of all methods make up ``mto.config.MIMConfig``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

MTO_ON = ("encoder", "decoder")  # where the method's mask tokens are, so where MTO acts
MASKINGS = ("block", "random")  # SimMIM's block masking (mim.mask_patch_size), or per patch as in MAE


@dataclass(frozen=True)
class Method:
    """One MIM method, as the rest of the library sees it."""

    name: str
    model: str  # "module:Class" of its model (imported on first build: torch)
    mto_on: str  # "encoder": mask tokens enter the encoder; "decoder": only the decoder sees them
    masking: str
    summary: str = ""  # one line: the method and its paper
    fusable: bool = False  # no momentum branch, no randomness or batch statistics inside the forward
    momentum: tuple[float, float] | None = None  # its momentum encoder's (start, end) rate, the authors' values
    settings: tuple[type, ...] = ()  # dataclasses of the mim.* settings it reads; shared ones appear in several
    defaults: dict[str, Any] = field(default_factory=dict)  # the authors' value of a setting left null
    # checks that read files, run before a study starts, given the trial's mto.config.TrialConfig (not imported
    # here: the config imports the registry)
    preflight: Callable[[Any], None] | None = None

    def __post_init__(self) -> None:
        if self.mto_on not in MTO_ON or self.masking not in MASKINGS:
            raise ValueError(f"method {self.name}: mto_on in {MTO_ON}, masking in {MASKINGS}")

    def model_class(self) -> type:
        """The method's model: a subclass of ``mto.methods.base.MaskedImageModel`` (imports torch)."""
        return load(self.model)


def load(ref: str) -> Any:
    """What ``ref``, ``"module:name"``, names; its module is imported now. A description names its model's
    code this way, so the description stays torch-free and below the models it describes."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


_REGISTRY: dict[str, Method] = {}
DEFAULT = "simmim"  # mim.method when a study names none


def register(method: Method) -> Method:
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} is registered twice")
    _REGISTRY[method.name] = method
    return method


def get(name: str) -> Method:
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def methods() -> tuple[Method, ...]:
    return tuple(_REGISTRY.values())


def settings_classes() -> tuple[type, ...]:
    """Every method's settings dataclasses, each once, in registry order: the bases of ``MIMConfig``."""
    out: list[type] = []
    for m in _REGISTRY.values():
        out += [s for s in m.settings if s not in out]
    seen: dict[str, type] = {}
    for s in out:
        for f in fields(s):
            if f.name in seen:
                raise ImportError(f"mim.{f.name} is defined by both {seen[f.name].__name__} and {s.__name__}")
            seen[f.name] = s
    return tuple(out)


def owners(setting: str) -> tuple[str, ...]:
    """The methods that read ``mim.<setting>`` (empty for the settings every method reads)."""
    return tuple(m.name for m in _REGISTRY.values() if any(setting in {f.name for f in fields(s)} for s in m.settings))


def _discover() -> None:
    """Import every method folder of ``mto.methods`` (each registers itself), in the order of their names,
    with the default method first."""
    import mto.methods as package

    found = sorted((i.name for i in pkgutil.iter_modules(package.__path__) if i.ispkg), key=lambda n: (n != DEFAULT, n))
    for name in found:
        importlib.import_module(f"mto.methods.{name}")


_discover()
