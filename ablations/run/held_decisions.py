"""Ray Tune's restore, made to drop the decisions an earlier driver held back for its trials.

Ray Tune (2.x) holds a decision (STOP, CONTINUE) back while a trial's checkpoint is being saved, saves the held
decisions with its experiment state, and restores them on ``Tuner.restore``. A trial whose worker died while a
checkpoint was being saved leaves a held STOP that nothing pops (its save never resolves); resumed, the trial
trains one epoch, its first save pops that STOP, and it ends TERMINATED with its remaining epochs untrained. No
decision of an earlier driver applies to a trial it runs again, so none is restored.

This relies on private names of Ray Tune, listed in ``RAY_NAMES``; ``pyproject.toml`` bounds ``ray[tune]`` above by the
newest minor release they were tested with, and ``tests/ablations/run/test_ray_names.py`` checks each is there.
"""

from __future__ import annotations

from typing import Any

# The private names of Ray Tune used here ("module:qualified name"): the controller class, the method that restores
# its state (``TuneController.resume`` calls it), and the two attributes of that state that hold the decisions.
CONTROLLER = "ray.tune.execution.tune_controller:TuneController"
RESTORE = "__setstate__"
DECISIONS = ("_cached_trial_decisions", "_queued_trial_decisions")
RAY_NAMES = (f"{CONTROLLER}.{RESTORE}", *(f"{CONTROLLER}.{name}" for name in DECISIONS))


def forget_held_decisions() -> None:
    """Patch ``TuneController.__setstate__`` (once per process) so that a restored controller holds no decision."""
    from ray.tune.execution.tune_controller import TuneController

    restore = getattr(TuneController, RESTORE)  # used by TuneController.resume only
    if getattr(restore, "drops_held_decisions", False):
        return

    def __setstate__(self, state: dict[str, Any]) -> None:
        restore(self, {**state, **{name: {} for name in DECISIONS}})

    __setstate__.drops_held_decisions = True
    setattr(TuneController, RESTORE, __setstate__)
