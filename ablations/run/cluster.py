"""The Ray cluster a study runs on: checked before any run exists (``--address`` names a cluster that answers as
Ray's head does, checked in seconds before Ray's own minutes of retries; every trial's resources fit on one of its
nodes: the local node's, as Ray counts them, before Ray starts), started or joined with the environment its workers
need (Ray Tune's settings, ``torch.compile``'s shared caches).

Private names of Ray used here (``RAY_NAMES``): how ``auto`` is resolved, and how a local node counts its CPUs and
GPUs before it starts."""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path
from typing import Any

from ablations.study import StudySpec

ADDRESS = re.compile(r"^(?P<client>ray://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(?P<port>\d{1,5})$")
ADDRESS_FORMS = "auto (the cluster `ray start` started on this machine), HOST:PORT (its head) or ray://HOST:PORT"
# Ray's head (its GCS) and its client server speak gRPC, so HTTP/2: to the client's connection preface and an empty
# SETTINGS frame, such a server answers with its own SETTINGS frame (type 4), what an HTTP/1 server or a silent one
# never sends.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
SETTINGS_FRAME = 4
RESOLVE_AUTO = "ray._private.services:canonicalize_bootstrap_address"
LOCAL_NODE = "ray._private.resource_and_label_spec:ResourceAndLabelSpec.resolve"
RAY_NAMES = (RESOLVE_AUTO, LOCAL_NODE)


class ClusterError(RuntimeError):
    """The cluster cannot run the study; the message is one line naming the setting, its value and what is allowed."""


def check_address(address: str, timeout: float = 3.0) -> None:
    """Raise ClusterError unless ``address`` has one of ``ADDRESS_FORMS`` and something listens there.

    ``auto`` is resolved as Ray resolves it (``RAY_ADDRESS``, else the address ``ray start`` recorded)."""
    shown = repr(address[:200])
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            found = canonicalize_bootstrap_address("auto")
        except Exception as err:  # noqa: BLE001 - Ray's ConnectionError: no cluster was started here
            raise ClusterError(
                f"--address auto: no running Ray cluster was found here ({str(err).splitlines()[0][:160]}); start "
                "one with `ray start --head`, or give its address as HOST:PORT"
            ) from None
        if not found:
            raise ClusterError("--address auto: no running Ray cluster was found here; start one with `ray start`")
        address = found
    m = ADDRESS.match(address)
    if not m or not 1 <= int(m.group("port")) <= 65535:
        raise ClusterError(f"--address {shown} is not a Ray address: give {ADDRESS_FORMS}")
    host, port = m.group("host").strip("[]"), int(m.group("port"))
    why = _speaks_grpc(host, port, timeout)
    if why:
        raise ClusterError(
            f"--address {shown}: no Ray cluster answers at {host}:{port} ({why}); start it (ray start --head) or "
            "check the host and port"
        )


def _speaks_grpc(host: str, port: int, timeout: float) -> str:
    """Why nothing at ``host:port`` answers as Ray's head would ("" when it does): nothing listens, it stays silent,
    or it answers but not in HTTP/2 (an HTTP/1 server: its first bytes are quoted)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(HTTP2_PREFACE)
            head = b""
            while len(head) < 9:
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except TimeoutError:
        return f"nothing answered within {timeout:g} s"
    except OSError as err:
        return err.strerror or type(err).__name__
    if len(head) == 9 and head[3] == SETTINGS_FRAME:
        return ""
    said = head.decode("ascii", "replace").strip() or "it closed the connection"
    return f"it answers, but not as Ray's head does (gRPC): {said!r}"


def local_node() -> dict[str, float]:
    """The CPUs and GPUs of the node ``ray.init()`` would start here, counted as Ray counts them (``num_cpus``
    from the cores and cgroup limits, GPUs from the visible accelerators), without starting it."""
    from ray._private.resource_and_label_spec import ResourceAndLabelSpec

    spec = ResourceAndLabelSpec().resolve(is_head=True)
    return {"CPU": float(spec.num_cpus), "GPU": float(spec.num_gpus or 0)}


def cluster_nodes() -> list[dict[str, float]]:
    """The resources of each alive node of the Ray cluster this driver joined."""
    import ray

    return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]


def check_resources(spec: StudySpec, nodes: list[dict[str, float]]) -> None:
    """Raise ClusterError when a trial asks for more of a resource than any of ``nodes`` has (a trial runs on one
    node; Ray would wait for such a node forever): the local node before Ray starts (``local_node``), or the
    cluster's joined with ``--address`` (``cluster_nodes``)."""
    for field, key, want, unit in (
        ("resources.cpu", "CPU", spec.resources.cpu, "CPUs"),
        ("resources.gpu", "GPU", spec.resources.gpu, "GPUs"),
    ):
        most = max((n.get(key, 0.0) for n in nodes), default=0.0)
        if want > most:
            if key == "GPU" and most == 0:
                allowed = "0: the Ray cluster has no GPU (set resources.gpu: 0 to run on CPUs)"
            else:
                allowed = f"at most {most:g}: no node of the Ray cluster has more {unit} (a trial runs on one node)"
            raise ClusterError(f"{field}={want:g} is invalid: {allowed}")


def ray_environment() -> None:
    # Set before Ray Tune reads them. Save experiment state every second (a killed driver loses
    # at most that much), keep Ray's own console output and loggers out of the way (MLflow is
    # the record), and let trials report the search objective only once it is measured.
    for key, value in {
        "TUNE_GLOBAL_CHECKPOINT_S": "1",
        "RAY_AIR_NEW_OUTPUT": "0",
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
        "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
        "TUNE_MAX_PENDING_TRIALS_PG": "8",
        "RAY_DEDUP_LOGS": "0",
    }.items():
        os.environ.setdefault(key, value)


def compile_env(folder: Path) -> dict[str, str]:
    """The environment that puts ``torch.compile``'s caches (Inductor's FX graphs, AOTAutograd) in ``folder``
    (``StudyLayout.compile_cache``), both on unless this process's environment turns one off."""
    return {
        "TORCHINDUCTOR_CACHE_DIR": str(folder),
        "TORCHINDUCTOR_FX_GRAPH_CACHE": os.environ.get("TORCHINDUCTOR_FX_GRAPH_CACHE", "1"),
        "TORCHINDUCTOR_AUTOGRAD_CACHE": os.environ.get("TORCHINDUCTOR_AUTOGRAD_CACHE", "1"),
    }


def compile_cache(folder: Path) -> dict[str, str]:
    """``torch.compile``'s caches in ``folder`` (``compile_env``), shared by every trial of the study and kept across
    its invocations: a model shape compiled once is loaded, not compiled, by the trials after it. Set here for the
    local workers; returned for the workers of a cluster joined with ``--address`` (each node keeps its own copy
    where ``storage`` is not shared)."""
    env = compile_env(folder)
    os.environ.update(env)
    return env


def init_ray(address: str | None, env: dict[str, str]) -> None:
    """Start a local Ray cluster (its workers inherit this process's environment), or join ``address``
    with ``env`` set in the workers of this job."""
    import ray

    # Trial failures are reported by this suite (console summary, MLflow tag); Ray's own
    # tracebacks on the console would only bury them.
    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = dict(
        include_dashboard=False, configure_logging=True, logging_level="ERROR", log_to_driver=False
    )
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, **kwargs)
    else:
        ray.init(address="local", **kwargs)  # a cluster of its own, never one a `ray start` left running


def shutdown_ray() -> None:
    """Stop the local Ray cluster this driver started (or leave the one it joined), once its trials are done."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
