"""Progress of a study with rich: on a terminal, a live table with one row per Ray trial (status, epoch of
total, latest metric, elapsed and ETA) under a title with the study's time left; elsewhere (a CI log, ``| tee``),
one line per evaluation and one per finished trial, so a log shows progress from the first evaluation (epoch 0) on.

The study's time left comes from the pace of the epochs done so far: each running trial's own, a trial not yet
started at the mean seconds per epoch measured, scheduled as many at a time as have run at once
(``ablations.study.cost.makespan``)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from ablations.study.cost import makespan


@dataclass
class Row:
    name: str
    epochs: int
    status: str = "pending"
    epoch: int = 0
    metric: float | None = None
    started: float = field(default_factory=time.monotonic)
    first_epoch: int = 0  # epochs already done when this process picked the trial up (resume)
    reason: str = ""

    def pace(self) -> float | None:
        """Seconds per epoch trained by this driver, None before the first."""
        done = self.epoch - self.first_epoch
        return (time.monotonic() - self.started) / done if done > 0 else None

    def eta(self) -> float | None:
        pace = self.pace()
        if self.status != "running" or pace is None:
            return None
        return pace * (self.epochs - self.epoch)


def duration(seconds: float) -> str:
    """``seconds`` in words a reader takes in at once: "40 s", "12 min", "3.5 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TrialBoard:
    """The table of trials; live on a terminal, otherwise one line per evaluation and per finished trial.

    ``epochs``: each Ray trial's epochs by name, and under ``"*"`` those of each of the ``samples`` search samples
    (named as Ray Tune draws them)."""

    def __init__(
        self, title: str, epochs: dict[str, int], metric: str, console: Console | None = None, samples: int = 0
    ):
        self.title, self.metric, self.epochs, self.samples = title, metric, epochs, samples
        self.rows: dict[str, Row] = {}
        self.started = time.monotonic()
        self.most_running = 1  # the most Ray trials seen running at once: the study's concurrency
        self._console = console
        self._live: Live | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_console"], state["_live"] = None, None
        return state

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = Console(file=sys.stderr)
        return self._console

    def __enter__(self) -> TrialBoard:
        if self.console.is_terminal:
            self._live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)
            self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.stop()
            self._live = None

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())

    def start(self, trial_id: str, name: str) -> None:
        row = self.rows.get(trial_id)
        if row is None:
            row = self.rows[trial_id] = Row(name, self.epochs.get(name, self.epochs.get("*", 0)))
        row.status, row.started, row.first_epoch = "running", time.monotonic(), row.epoch
        self.most_running = max(self.most_running, sum(r.status == "running" for r in self.rows.values()))
        self._refresh()

    def time_left(self) -> float | None:
        """Seconds until the study's trials end at the pace measured so far (search samples not drawn yet at their
        full length: ASHA may stop them sooner); None before any epoch is measured."""
        paces = [p for p in (r.pace() for r in self.rows.values()) if p is not None]
        if not paces:
            return None
        mean, named = sum(paces) / len(paces), {r.name for r in self.rows.values()}
        left = [
            r.eta() if r.eta() is not None else mean * (r.epochs - r.epoch)
            for r in self.rows.values()
            if r.status in ("running", "pending")
        ]
        left += [mean * epochs for name, epochs in self.epochs.items() if name != "*" and name not in named]
        drawn = len(named - set(self.epochs))
        left += [mean * self.epochs.get("*", 0)] * max(0, self.samples - drawn)
        return makespan(left, self.most_running)

    def update(self, trial_id: str, epoch: int, metric: float | None) -> None:
        row = self.rows[trial_id]
        if row.first_epoch == 0 and row.epoch == 0 and epoch > 1:
            row.first_epoch = epoch - 1  # resumed from a checkpoint
        row.epoch = epoch
        if metric is not None:
            row.metric = float(metric)
            if self._live is None:  # not a terminal: each evaluation is a line of the log
                self._line(
                    f"[epoch] {row.name}  epoch {epoch}/{row.epochs}  {self.metric}={row.metric:.4f}  "
                    f"elapsed {_clock(time.monotonic() - row.started)}  study: {_clock(self.time_left())} left"
                )
        self._refresh()

    def _line(self, text: str) -> None:
        self.console.print(escape(text), highlight=False, soft_wrap=True)

    def finish(self, trial_id: str, status: str, reason: str = "") -> None:
        row = self.rows[trial_id]
        row.status, row.reason = status, reason
        if self._live is None:
            shown = f"{row.metric:.4f}" if row.metric is not None else "-"
            line = f"[{status}] {row.name}  epoch {row.epoch}/{row.epochs}  {self.metric}={shown}"
            self._line(line + (f"  {reason}" if reason else ""))
        self._refresh()

    def warn(self, message: str) -> None:
        """A line above the board (or in the log when not on a terminal) that the user must see."""
        self.console.print(f"[yellow]{escape(message)}[/]", highlight=False, soft_wrap=True)

    def render(self) -> Table:
        done = sum(r.status in ("done", "FAILED") for r in self.rows.values())
        table = Table(
            title=f"{self.title}: {done}/{max(len(self.rows), done)} trials finished, "
            f"elapsed {_clock(time.monotonic() - self.started)}, about {_clock(self.time_left())} left",
            title_justify="left",
        )
        for col in ("trial", "status", "epoch", self.metric, "elapsed", "ETA"):
            table.add_column(col, justify="right" if col not in ("trial", "status") else "left")
        for row in self.rows.values():
            style = {"FAILED": "red", "done": "green", "running": "cyan"}.get(row.status, "")
            metric = f"{row.metric:.4f}" if row.metric is not None else "-"
            table.add_row(
                row.name,
                f"[{style}]{row.status}[/]" if style else row.status,
                f"{row.epoch}/{row.epochs}",
                metric,
                _clock(time.monotonic() - row.started),
                _clock(row.eta()),
            )
        return table
