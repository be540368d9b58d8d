"""Ray processes a killed driver leaves behind: recorded when a study starts, stopped when it starts again.

A driver that starts a local Ray node (``ray.init()`` without an address) owns its raylet, GCS and
workers; after ``kill -9`` of the driver they live on, holding CPUs and memory. Their ids are kept
in the invocation's state file (``Invocation.state``); the next start of the same study stops those still running
whose driver is gone (and only those, after checking their command line is Ray's).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from ablations.run.layout import Invocation

# Private names of Ray read here ("module:qualified name"): the local node this driver started, and its processes.
RAY_NAMES = ("ray._private.worker:_global_node", "ray._private.node:Node.all_processes")


def ray_pids() -> list[int]:
    """The processes of the local Ray node this driver started: raylet, GCS, ... and the agents they
    start (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``), which are what outlive a killed driver."""
    try:
        import ray._private.worker as worker

        node = worker._global_node
        pids = {p.process.pid for infos in node.all_processes.values() for p in infos}
    except Exception:  # noqa: BLE001 - a private API: without it only the README's `ray stop` is left
        return []
    pids |= {pid for pid, parent in parents().items() if parent in pids}
    return sorted(pids)


def parents() -> dict[int, int]:
    """Every live process's parent, from ``/proc/<pid>/stat``: process id -> parent process id."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            found[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return found


def stop_stale_ray(latest: Invocation | None) -> list[int]:
    """Stop the Ray processes an earlier driver of this study started and left behind (it was killed).

    Only processes recorded in the state of ``latest`` (the study's latest invocation, if any), whose driver is
    gone and whose command line is Ray's, are stopped. Returns their ids."""
    if latest is None:
        return []
    try:
        state = json.loads(latest.state.read_text())
    except (OSError, ValueError):
        return []
    if not state.get("ray_pids") or _alive(state.get("driver_pid", 0)):
        return []
    stopped = []
    for pid in state["ray_pids"]:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "ray" in cmdline:
            try:
                os.kill(pid, signal.SIGTERM)
                stopped.append(pid)
            except OSError:
                pass
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in stopped) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in stopped:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return stopped


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False
