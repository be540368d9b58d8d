"""Every path the driver writes for a study, in one place: ``StudyLayout`` (the study's folder) and
``Invocation`` (one run or resume of it). Standard library only.

Under ``storage`` (a folder; with a URI, Ray Tune's experiments go to ``<URI>/<study>/<invocation>/`` and the
rest stays under ``ray_results``)::

    <storage>/<study>/                       StudyLayout.root
        driver.lock                          .lock: the hold of one driver (ablations.run.hold)
        compile-cache/                       .compile_cache: torch.compile's caches, shared by the study's trials
            paces.json                       .paces: each model shape's pace here, for the study's cost
        <YYYYmmdd-HHMMSS>/                   Invocation.folder (``--resume`` picks the latest)
            ablation.json                    .state: parent run id, tracking URI, the study as run, driver and Ray pids
            pending_tracking.jsonl           .journal: trial writes kept until the tracking store takes them
            artifacts/<trial>/               .artifact(): files the driver attaches (affinity maps from the results;
                                             encoder/, removed once attached)
            arms/                            .experiment("arms"): Ray Tune experiment, variants x grid x seeds
            search/                          .experiment("search"): Ray Tune experiment, the Optuna search
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ablations.run.files import safe_name


@dataclass(frozen=True)
class Invocation:
    """The folder of one invocation of a study, and Ray Tune's storage for it."""

    folder: Path
    tune_uri: str | None = None  # Ray Tune's storage URI for this invocation; None: ``folder``

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def state(self) -> Path:
        return self.folder / "ablation.json"

    @property
    def journal(self) -> Path:
        return self.folder / "pending_tracking.jsonl"

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"

    def artifact(self, trial: str, file: str) -> Path:
        """Where the driver writes ``file`` of trial ``trial`` before it attaches it to the trial's run."""
        return self.artifacts / safe_name(trial) / file

    @property
    def tune_storage(self) -> str:
        """Ray Tune's ``storage_path``: the folder, or the same name under the ``storage`` URI."""
        return self.tune_uri or str(self.folder)

    def experiment(self, phase: str) -> str:
        """Ray Tune's experiment folder of ``phase`` (``arms``, ``search``)."""
        return f"{self.tune_storage}/{phase}"


@dataclass(frozen=True)
class StudyLayout:
    """The driver's files of study ``study`` under ``storage`` (its own folder); ``tune_uri``: the study's
    ``storage`` when it is a URI (Ray Tune's experiments go there)."""

    storage: Path
    study: str
    tune_uri: str | None = None

    @classmethod
    def of(cls, storage: str, study: str, tune_uri: str | None = None) -> StudyLayout:
        return cls(Path(storage).resolve(), study, tune_uri.rstrip("/") if tune_uri else None)

    @property
    def root(self) -> Path:
        return self.storage / self.study

    @property
    def lock(self) -> Path:
        return self.root / "driver.lock"

    @property
    def compile_cache(self) -> Path:
        return self.root / "compile-cache"

    @property
    def paces(self) -> Path:
        """The pace of each model shape measured on this machine (``ablations.run.estimate``)."""
        return self.compile_cache / "paces.json"

    def invocation(self, name: str) -> Invocation:
        uri = f"{self.tune_uri}/{self.study}/{name}" if self.tune_uri else None
        return Invocation(self.root / name, uri)

    def latest(self) -> Invocation | None:
        """The latest invocation that wrote its state, if any."""
        folders = sorted(p.name for p in self.root.glob("*")) if self.root.is_dir() else []
        found = [self.invocation(name) for name in folders if self.invocation(name).state.is_file()]
        return found[-1] if found else None

    def new_invocation(self) -> Invocation:
        """A new invocation, named after the time it starts (not created on disk)."""
        invocation = self.invocation(time.strftime("%Y%m%d-%H%M%S"))
        while invocation.folder.exists():
            time.sleep(1)
            invocation = self.invocation(time.strftime("%Y%m%d-%H%M%S"))
        return invocation
