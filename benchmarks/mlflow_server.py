"""A local ``mlflow server`` for the benchmarks and tests that need one: on 127.0.0.1 only, in its own process
group (stopping it stops every process it started), MLflow's job runner off (tracking does not use it, and a
stopped server would leave its consumers running)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    backend_uri: str, port: int, artifacts: Path | None = None, workers: int | None = None, timeout: float = 120
) -> subprocess.Popen:
    """``mlflow server`` over ``backend_uri`` on 127.0.0.1:``port`` (artifacts proxied from ``artifacts`` where
    given; ``workers`` where given, else MLflow's default), returned once ``/health`` answers. Raises
    ``RuntimeError`` (the server stopped) when it exits first or ``timeout`` seconds pass."""
    args = [
        *(["--artifacts-destination", str(artifacts)] if artifacts else []),
        *(["--workers", str(workers)] if workers else []),
    ]
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port)]
        + ["--backend-store-uri", backend_uri, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                stop(server)
                raise RuntimeError(f"mlflow server on 127.0.0.1:{port} did not start") from None
            time.sleep(0.3)


def stop(server: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a server started in its own process group and every process it started (``signal.SIGKILL``: as a crash
    would)."""
    try:
        os.killpg(server.pid, sig)
    except ProcessLookupError:
        pass
    server.wait(timeout=60)


@contextmanager
def serving(
    backend_uri: str, port: int | None = None, artifacts: Path | None = None, workers: int | None = None
) -> Iterator[str]:
    """``start`` (on a free port unless ``port`` is given), yield the server's URL, ``stop`` after."""
    port = port or free_port()
    server = start(backend_uri, port, artifacts, workers)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)
