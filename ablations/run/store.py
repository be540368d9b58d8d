"""The tracking store, before and while a study writes to it: is it usable (checked before any run
exists), is it made (a new SQLite store's tables, made once under a file lock), does it take writes now, and how a
user opens it in the MLflow UI. Standard library and the contract only (MLflow itself to make a store)."""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ablations.contract import sqlite_path


class TrackingError(RuntimeError):
    """The tracking store cannot be used (reported before any trial starts)."""


class StoreDown(TrackingError):
    """The tracking store took none of the writes an earlier driver kept (busy, or not answering): they stay kept,
    and a later ``--resume`` makes them."""


# The driver's MLflow HTTP client: give up on a dead server in seconds, not minutes (MLflow's
# defaults retry 7 times with exponential backoff and wait 120 s per request). Writes that fail
# are kept and made later (StudyTracker), so nothing is lost by giving up early.
for _key, _value in {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}.items():
    os.environ.setdefault(_key, _value)

SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


def check_tracking(uri: str, timeout: float = 5.0) -> None:
    """Raise TrackingError unless the store can be used: a known scheme; an HTTP server that answers
    /health and MLflow's REST API; a SQLite file that is a database (or can be created) in a
    writable folder. Creates nothing."""
    scheme = uri.split("://", 1)[0] if "://" in uri else "file"
    if scheme.split("+")[0] not in SCHEMES:
        raise TrackingError(
            f"tracking URI {uri[:200]!r}: unknown scheme {scheme[:40]!r}; use sqlite:///path/mlflow.db, "
            "http://host:port (an mlflow server) or a folder"
        )
    if scheme in ("http", "https"):
        _check_server(uri, timeout)
    elif scheme == "sqlite":
        db = sqlite_path(uri)
        if db is None:
            raise TrackingError(f"tracking URI {uri[:200]!r}: a SQLite store is sqlite:/// followed by a file path")
        _check_sqlite(db)
    elif scheme == "file":
        folder = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
        if folder.exists() and not folder.is_dir():
            raise TrackingError(f"tracking store {uri[:200]}: {folder} is a file; a file store is a folder")


def _check_server(uri: str, timeout: float) -> None:
    base = uri.rstrip("/")
    try:
        with urllib.request.urlopen(base + "/health", timeout=timeout) as resp:
            resp.read(1000)
    except urllib.error.HTTPError as err:
        raise TrackingError(
            f"tracking server {uri} answered HTTP {err.code} on /health: is it an mlflow server?"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise TrackingError(
            f"tracking server {uri} is unreachable ({str(getattr(err, 'reason', err))[:200]}); "
            "start it (mlflow server ...) or pass another --tracking-uri"
        ) from None
    probe = base + "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(probe, timeout=timeout) as resp:
            body = json.loads(resp.read(1_000_000))
        ok = isinstance(body, dict)
    except (urllib.error.URLError, OSError, ValueError):
        ok = False
    if not ok:
        raise TrackingError(
            f"{uri} answers, but not as an MLflow tracking server (no JSON from "
            "/api/2.0/mlflow/experiments/search); check the address and port"
        )


def _check_sqlite(path: Path) -> None:
    import sqlite3

    if path.is_dir():
        raise TrackingError(f"the SQLite store {path} is a folder; give a file, e.g. {path / 'mlflow.db'}")
    folder = path.parent
    if not folder.is_dir():
        raise TrackingError(f"the folder of the SQLite store {path} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.R_OK | os.W_OK)):
        raise TrackingError(f"the SQLite store {path} is not writable here")
    if not path.exists():
        try:  # os.access says yes to root everywhere; a temporary file (removed at once) tells
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as err:
            raise TrackingError(f"the SQLite store {path} cannot be created here ({err.strerror})") from None
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            tables = {r[0] for r in db.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.DatabaseError as err:
        raise TrackingError(f"{path} is not a SQLite database ({err}); give a new file or an MLflow store") from None
    if tables and "experiments" not in tables:
        raise TrackingError(f"{path} is a SQLite database, but not an MLflow store (no experiments table)")


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store, as it can be pasted (the venv's mlflow)."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    mlflow = Path(sys.executable).with_name("mlflow")
    program = shlex.quote(str(mlflow)) if mlflow.is_file() else f"{shlex.quote(sys.executable)} -m mlflow"
    return f"{program} ui --backend-store-uri {shlex.quote(uri)} --host 127.0.0.1 --port 5000"


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's runs in the MLflow UI (``workflowType=machine_learning`` skips the GenAI view)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def unavailable(err: BaseException, uri: str) -> str:
    """Why the store did not take a write when that is the store's state, not the write's fault: it ``is busy``
    (MLflow's TEMPORARILY_UNAVAILABLE: SQLite's write lock held by another process past its busy timeout, a
    server's 503) or ``does not answer`` (the request was refused, reset or timed out, or the server's /health
    fails). "" when the store answered with an error about the write itself."""
    said = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]  # MLflow's SQL and parameters follow
    seen: BaseException | None = err
    while seen is not None:  # MLflow raises its own exception from within the handler of the cause
        if getattr(seen, "error_code", "") == "TEMPORARILY_UNAVAILABLE" or "database is locked" in str(seen):
            return f"is busy ({said})"
        transport = type(seen).__module__.split(".")[0] in ("requests", "urllib3")
        if transport or isinstance(seen, (ConnectionError, TimeoutError)):
            return f"does not answer ({type(seen).__name__})"
        seen = seen.__cause__ or seen.__context__
    return "" if store_answers(uri) else f"does not answer ({type(err).__name__})"


class _BusyStoreFilter(logging.Filter):
    """Drops MLflow's traceback of a busy SQLite store (``database is locked``): the journal says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "database is locked" not in record.getMessage()


def quiet_busy_store() -> None:
    """Keep MLflow from logging a traceback each time the SQLite store is busy (once per process)."""
    log = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _BusyStoreFilter) for f in log.filters):
        log.addFilter(_BusyStoreFilter())


def prepare_store(uri: str) -> None:
    """Make a SQLite store's tables, if it is new, holding an OS lock (``flock``) on its file meanwhile: MLflow makes
    them on first use, and two drivers making them at once (two studies started together in a fresh folder) would
    fail in MLflow's table creation; the second waits until the first has made them. Other stores: nothing to do."""
    db = sqlite_path(uri)
    if db is None:
        return
    import fcntl

    from mlflow import MlflowClient

    fd = os.open(db, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        MlflowClient(uri).search_experiments(max_results=1)  # makes or upgrades the tables
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def store_answers(uri: str, timeout: float = 3.0) -> bool:
    """Whether the tracking store answers now (an HTTP server's /health; a local store is always there)."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False
