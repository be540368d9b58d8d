"""The private names of Ray the suite relies on (each module's ``RAY_NAMES``) are there in the installed Ray.

``pyproject.toml`` bounds ``ray[tune]`` above by the newest minor release these were tested with; before that bound
is raised, this test and the tests of each name's use must pass with the new release: ``held_decisions`` (the
planted decision of ``test_machine_faults.py``), ``cluster`` (``auto`` resolved: ``test_cluster.py``; the local
node counted before Ray starts: ``test_refusals.py``), ``cleanup`` (``test_stale_ray.py``)."""

import importlib
import inspect
import re

import pytest

from ablations.run import cleanup, cluster, held_decisions

NAMES = [name for module in (held_decisions, cluster, cleanup) for name in module.RAY_NAMES]


def _found(name: str) -> bool:
    """Whether ``module:qualified.name`` exists: an attribute of the module or class, or one a method of the class
    sets on its instances (``self.<name> =``)."""
    module, _, qualified = name.partition(":")
    owner = importlib.import_module(module)
    *path, last = qualified.split(".")
    for part in path:
        owner = getattr(owner, part)
    if hasattr(owner, last):
        return True
    return (
        inspect.isclass(owner) and re.search(rf"self\.{re.escape(last)}\s*[:=]", inspect.getsource(owner)) is not None
    )


@pytest.mark.parametrize("name", NAMES)
def test_a_private_ray_name_the_suite_relies_on_is_there(name):
    assert _found(name), f"{name} is gone from Ray: check its use before raising the bound on ray[tune]"


def test_a_name_that_is_not_there_is_found_missing():
    assert not _found("ray.tune.execution.tune_controller:TuneController._no_such_decisions")
