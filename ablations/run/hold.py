"""One driver per study: the driver holds an OS lock (``fcntl.flock``) on the study's lock file
(``StudyLayout.lock``: ``<driver storage>/<study>/driver.lock``) from before it writes anything until it has ended
every run.

A second ``run`` or ``--resume`` of the same study, on this machine or on another that shares the folder, finds
the lock taken and is refused (exit 2) with the holder's host, process and start time, read from the file. The
kernel releases the lock of a process that dies (``kill -9``, a crash; on NFS the server does when the client's
lease lapses), so a dead holder never blocks the next ``--resume``: the file still names it (a holder that ends
normally empties it), and the new driver says it took the hold over. A driver that refuses the study after taking the
hold (its cluster lacks the resources) gives it up leaving nothing: the lock file and the folders the hold made are
removed. Standard library only.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Holder:
    """Who holds a study: the driver's host, process id and start time (UTC, ISO 8601)."""

    host: str
    pid: int
    since: str

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))

    def __str__(self) -> str:
        return f"process {self.pid} on host {self.host}, since {self.since}"


class StudyHeld(RuntimeError):
    """Another driver holds the study (the message names it and what to do)."""


class StudyHold:
    """The hold of ``study`` by this driver, through the lock file ``path``: ``take()`` (raises StudyHeld), then
    ``release()``; a context manager.

    ``taken_over`` names the earlier holder whose hold was taken over (it died without releasing), else None.
    """

    def __init__(self, path: Path, study: str):
        self.path = Path(path)
        self.study = study
        self.taken_over: Holder | None = None
        self._fd: int | None = None
        self._made: list[Path] = []  # what take() created: folders, outermost first, then the lock file

    def take(self) -> StudyHold:
        missing = [p for p in reversed(self.path.parents) if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._made = missing if self.path.exists() else [*missing, self.path]
        while True:
            fd = self._lock()
            try:  # a driver that gave the hold up removed the file after this one opened it: lock the new one
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self.taken_over = _read(fd)  # still named: its holder died holding it
        me = Holder.me()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me.__dict__).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def _lock(self) -> int:
        """The lock file, opened (created if missing) and locked; raises StudyHeld when another driver holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            who = str(holder) if holder else "a driver that has not yet written its name"
            raise StudyHeld(
                f"study {self.study!r} is being run by another driver ({who}; lock {self.path}): wait for it to "
                f"end, or stop it (Ctrl-C, or kill -TERM {holder.pid if holder else '<pid>'} on its host) and "
                "resume with --resume"
            ) from None
        except OSError as err:  # no driver can lock here: what take() made goes (no other driver holds it)
            os.close(fd)
            self._remove_made()
            raise StudyHeld(f"cannot lock {self.path} ({err.strerror}): the study's folder must allow locks") from None
        return fd

    def release(self, leave_nothing: bool = False) -> None:
        """Empty the file (a clean end), then let the lock go. ``leave_nothing``: the study was refused, so the lock
        file and the folders that ``take`` created are removed too (those still empty), before the lock goes."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            if leave_nothing:
                self._remove_made()
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _remove_made(self) -> None:
        """Remove the lock file and the folders that ``take`` created, innermost first, while they are empty."""
        for made in reversed(self._made):
            try:
                made.unlink() if made == self.path else made.rmdir()
            except OSError:  # a folder something else has written in since stays
                break

    def __enter__(self) -> StudyHold:
        return self.take()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> Holder | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
        return Holder(str(data["host"]), int(data["pid"]), str(data["since"])) if data else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
