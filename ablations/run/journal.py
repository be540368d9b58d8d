"""The journal: trial writes kept, in order, while the tracking store does not answer, and made once it does.

A write is an op, a JSON-able dict naming its trial (``ablations.run.ops``). While the store answers, an op is
made at once. When one fails and the store does not answer, it and every later op are kept, in order, in memory
and as one JSON line each in the journal file (``Invocation.journal``), so a driver killed meanwhile loses none;
they are made when the store answers again (tried every ``RETRY_S``), at the end of the study (``flush``), or by
``--resume`` (``replay``). No MLflow here: the caller passes ``make``, which makes one op in the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ablations.run.store import TrackingError, store_answers

Op = dict[str, Any]
Make = Callable[[Op], None]


class Journal:
    """The ops kept for the tracking store at ``uri``; ``path``: the file that keeps them too (None: memory only)."""

    RETRY_S = 15.0  # between attempts to reach a store that is down

    def __init__(self, uri: str, path: Path | None = None):
        self.uri, self.path = uri, path
        self._ops: list[Op] = []
        self._tried = 0.0  # when the store was last tried

    def __len__(self) -> int:
        return len(self._ops)

    def write(self, op: Op, make: Make) -> None:
        """Make ``op`` now, or keep it: behind ops already kept, or when the store stops answering. Raises what
        ``make`` raises while the store answers (the op itself is wrong)."""
        if self._ops:
            self._keep(op)
            if time.monotonic() - self._tried >= self.RETRY_S:
                self.flush(make)
            return
        try:
            make(op)
        except Exception as err:  # noqa: BLE001 - a store that still answers re-raises below
            if store_answers(self.uri):
                raise
            self._keep(op)
            self._tried = time.monotonic()
            where = f" in {self.path}" if self.path else ""
            _warn(
                f"tracking store {self.uri} does not answer ({type(err).__name__}); the trials go on and their "
                f"results are kept{where} until it is back"
            )

    def flush(self, make: Make) -> bool:
        """Make the kept ops, in order, if the store answers; those made leave the journal, and the rest stay when
        it stops answering again. True when none is left."""
        self._tried = time.monotonic()
        if not self._ops:
            return True
        if not store_answers(self.uri):
            return False
        done = 0
        try:
            for op in self._ops:
                make(op)
                done += 1
        except Exception:  # noqa: BLE001 - down again: keep the rest
            pass
        self._ops = self._ops[done:]
        self._save()
        if not self._ops:
            _warn(f"tracking store {self.uri} answers again: {done} kept writes made")
        return not self._ops

    def replay(self, make: Make, wanted: Callable[[Op], bool]) -> int:
        """On ``--resume``: make the ops an earlier driver kept in the file, those ``wanted`` (asked once per op, in
        order), then empty it. Returns how many the file held. Raises TrackingError when the store does not take
        them (they stay in the file)."""
        if self.path is None or not self.path.is_file():
            return 0
        ops = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        if not ops:
            return 0
        self._ops = [op for op in ops if wanted(op)]
        self._save()
        if not self.flush(make):
            raise TrackingError(f"tracking store {self.uri} does not take the {len(self)} kept writes in {self.path}")
        return len(ops)

    def _keep(self, op: Op) -> None:
        self._ops.append(op)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(op) + "\n")

    def _save(self) -> None:
        if self.path is not None:
            self.path.write_text("".join(json.dumps(op) + "\n" for op in self._ops))


def _warn(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[yellow]{escape(message)}[/]", highlight=False, soft_wrap=True)
