"""SIGTERM (a scheduler's stop, ``timeout``, ``kill``) stops a study as Ctrl-C does: Ray Tune saves its state, open
runs are marked KILLED and ``--resume`` goes on; the driver exits 143 instead of 130."""

from __future__ import annotations

import signal
import threading
from typing import Any

from ablations.run.callbacks import DriverSession


def stop_on_sigterm(session: DriverSession) -> Any:
    """Make SIGTERM stop the study of ``session`` as Ctrl-C does (noting it in ``session.terminated``). Returns the
    handler it replaced, for ``signal.signal`` to put back; None outside the main thread (nothing replaced)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> None:
        session.terminated = True
        signal.raise_signal(signal.SIGINT)  # Ray Tune's graceful stop (outside a fit: KeyboardInterrupt)

    return signal.signal(signal.SIGTERM, stop)
