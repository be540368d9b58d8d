"""The journal: the tracker's trial writes, kept from the moment they are written until the store has taken them,
and made by a writer thread of their own, so that a slow, busy or silent store never slows the trials.

A write is an op, a JSON-able dict naming its trial (``ablations.run.ops``). ``write`` keeps it, in memory and as one
JSON line in the journal file (``Invocation.journal``), and returns at once: a driver killed meanwhile loses none
(``--resume`` makes them, ``replay``). The writer makes the kept ops as soon as it can, each trial's in order, a run
of one trial's epoch ops as one group (``groups``: one MLflow batch), and drops what the store took from the file.
When the store does not take a group because it is busy (SQLite's write lock held by another process past its busy
timeout: MLflow's TEMPORARILY_UNAVAILABLE) or does not answer (a server down), that group and every later op stay
kept and the writer tries again every ``RETRY_S``. Any other error is about the write itself: it is raised in the
caller's thread at its next ``write`` or ``flush``, and the study fails (``ablations.run.store.unavailable`` tells
which). No MLflow here: the caller passes ``make``, which makes one group in the store.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ablations.run.store import StoreDown, unavailable

Op = dict[str, Any]
Make = Callable[[list[Op]], None]
BATCH = 1000  # metrics in one MLflow log_batch, at most (MLflow's limit)


def groups(ops: list[Op]) -> list[list[int]]:
    """The indices of ``ops`` as the writer makes them: trial after trial (each trial's ops in their order), a run of
    consecutive epoch ops of a trial together while their metrics fit in one batch, every other op alone."""
    out: list[list[int]] = []
    last: dict[str, list[int]] = {}  # trial -> its latest group, while that is a growing run of epoch ops
    size: dict[str, int] = {}
    order: dict[str, list[list[int]]] = {}
    for i, op in enumerate(ops):
        trial, n = op["trial"], len(op.get("metrics", ()))
        run = last.get(trial)
        if op["op"] == "epoch" and run is not None and size[trial] + n <= BATCH:
            run.append(i)
            size[trial] += n
            continue
        group = [i]
        order.setdefault(trial, []).append(group)
        last[trial], size[trial] = (group, n) if op["op"] == "epoch" else (None, 0)
    for trial_groups in order.values():
        out += trial_groups
    return out


class Journal:
    """The ops kept for the tracking store at ``uri``, made by ``make`` (one group at a time) in a writer thread;
    ``path``: the file that keeps them too (None: memory only)."""

    RETRY_S = 5.0  # between attempts to write to a store that is busy or does not answer

    def __init__(self, uri: str, path: Path | None, make: Make):
        self.uri, self.path, self._make = uri, path, make
        self._ops: list[Op] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._rounds = 0  # rounds of the writer done: everything kept made, or stopped by the store
        self._down = ""  # why the store takes no writes now; "" while it does
        self._error: BaseException | None = None  # a write the store refused: raised to the caller
        self._retry_at = 0.0
        self._file_failed = False  # the journal file could not be written: said once

    def __len__(self) -> int:
        with self._cv:
            return len(self._ops)

    @property
    def unavailable(self) -> str:
        """Why the store took none of the writer's last attempt ("" when it took it): ``is busy (...)``, ``does not
        answer (...)``."""
        return self._down

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_cv", "_thread", "_error")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _cv=threading.Condition(), _thread=None, _error=None)

    def write(self, op: Op) -> None:
        """Keep ``op`` for the writer to make; raises the error of a write the store refused before."""
        with self._cv:
            self._raise()
            self._ops.append(op)
            self._file(lambda: self._append(op))
            self._cv.notify_all()
        self._start()

    def flush(self, timeout: float | None = None) -> bool:
        """Have the writer try now, and wait until it has made every kept op (True), or has found the store busy or
        silent (False: they stay kept), or ``timeout`` seconds have passed. Raises the error of a write the store
        refused."""
        self._start()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            start, self._retry_at = self._rounds, 0.0
            self._cv.notify_all()
            while self._ops and self._error is None and not (self._down and self._rounds > start):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cv.wait(left)
            self._raise()
            return not self._ops

    def replay(self, wanted: Callable[[Op], bool]) -> int:
        """On ``--resume``: make the ops an earlier driver kept in the file, those ``wanted`` (asked once per op, in
        order). Returns how many the file held. Raises StoreDown when the store does not take them (they stay
        in the file)."""
        if self.path is None or not self.path.is_file():
            return 0
        ops = []
        for line in self.path.read_text().splitlines():
            try:
                ops.append(json.loads(line))
            except ValueError:  # the last line of a driver killed while writing it
                continue
        with self._cv:
            self._ops = [op for op in ops if wanted(op)]
            self._save()
        if not self.flush():
            raise StoreDown(f"tracking store {self.uri} does not take the {len(self)} kept writes in {self.path}")
        return len(ops)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="mlflow-journal", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        try:
            self._rounds_forever()
        except Exception as err:  # noqa: BLE001 - a fault of the writer itself: raised to the caller, never a hang
            with self._cv:
                self._error = err
                self._cv.notify_all()

    def _rounds_forever(self) -> None:
        while True:
            with self._cv:
                while not self._ops or self._error is not None or time.monotonic() < self._retry_at:
                    self._cv.wait(None if not self._ops or self._error else self._retry_at - time.monotonic())
                batch = list(self._ops)
            made, failed, err = self._round(batch)
            why = unavailable(err, self.uri) if err is not None else ""
            with self._cv:
                done = made | (failed if err is not None and not why else set())  # a refused write is not kept
                self._ops = [op for i, op in enumerate(self._ops[: len(batch)]) if i not in done] + self._ops[
                    len(batch) :
                ]
                self._save()
                if err is not None and not why:
                    self._error = err
                elif why:
                    if not self._down:
                        where = f" in {self.path}" if self.path else ""
                        _warn(
                            f"tracking store {self.uri} {why}; the trials go on and their results are kept{where} "
                            "until it takes them"
                        )
                    self._down, self._retry_at = why, time.monotonic() + self.RETRY_S
                elif self._down:
                    self._down = ""
                    _warn(f"tracking store {self.uri} answers again: the kept writes are made")
                self._rounds += 1
                self._cv.notify_all()

    def _round(self, batch: list[Op]) -> tuple[set[int], set[int], BaseException | None]:
        """Make ``batch`` group by group; stops at the first group the store does not take. Returns (the indices
        made, those of the group that failed, its error)."""
        made: set[int] = set()
        for group in groups(batch):
            try:
                self._make([batch[i] for i in group])
            except Exception as err:  # noqa: BLE001 - classified by the caller: the store's, or the write's
                return made, set(group), err
            made.update(group)
        return made, set(), None

    def _append(self, op: Op) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(op) + "\n")

    def _save(self) -> None:
        """The file rewritten to hold the kept ops: a new file moved over the old one, so that a driver killed
        meanwhile leaves either whole."""

        def write() -> None:
            new = self.path.with_name(self.path.name + ".new")
            new.write_text("".join(json.dumps(op) + "\n" for op in self._ops))
            os.replace(new, self.path)

        self._file(write)

    def _file(self, write: Callable[[], None]) -> None:
        """Write the journal file (under the lock); a file that cannot be written (a full disk) leaves the ops in
        memory alone, said once: the study goes on, and only a driver killed meanwhile would lose them."""
        if self.path is None:
            return
        try:
            write()
        except OSError as err:
            if not self._file_failed:
                self._file_failed = True
                _warn(f"the journal {self.path} cannot be written ({err.strerror}): writes are kept in memory only")


def _warn(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[yellow]{escape(message)}[/]", highlight=False, soft_wrap=True)
