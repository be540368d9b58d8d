"""Real Ray nodes on this machine for the cluster tests: Ray's own ``ray.cluster_utils.Cluster`` (a head and
raylets of their own, each with its resources), started in a process of its own so that the test process
never imports Ray, every node on 127.0.0.1.

    python -m tests.ablations.ray_nodes '{"head": {"num_cpus": 0}, "nodes": [{"num_cpus": 1}, ...]}'

prints ``{"address": ..., "nodes": [node ids]}`` once the nodes are up, then reads commands on stdin:
``remove I`` kills node I without a chance to clean up (its raylet and workers), ``stop`` ends the cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray keeps 127.0.0.1 as given (no rewrite to the host's address)


class RayNodes:
    """The test's handle: the cluster's address, its worker nodes' ids, and ``remove``."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        started = json.loads(process.stdout.readline() or "{}")
        if "address" not in started:
            raise RuntimeError(f"the Ray nodes did not start: {process.stderr.read()[-3000:]}")
        self.address: str = started["address"]
        self.nodes: list[str] = started["nodes"]

    def remove(self, index: int) -> None:
        self.process.stdin.write(f"remove {index}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "removed"


@contextmanager
def ray_nodes(head: dict, *nodes: dict, env: dict | None = None) -> Iterator[RayNodes]:
    """The nodes (their workers get ``env`` on top of this process's environment), stopped on exit."""
    env = {**os.environ, **LOOPBACK, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **(env or {})}
    spec = json.dumps({"head": head, "nodes": list(nodes)})
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.ablations.ray_nodes", spec],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        yield RayNodes(process)
    finally:
        try:
            process.stdin.write("stop\n")
            process.stdin.flush()
            process.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(process.pid, 9)
            process.wait()


def main() -> None:
    os.environ.update(LOOPBACK)  # before Ray is imported
    from ray.cluster_utils import Cluster

    spec = json.loads(sys.argv[1])
    cluster = Cluster(initialize_head=True, head_node_args={"node_ip_address": "127.0.0.1", **spec["head"]})
    nodes = [cluster.add_node(node_ip_address="127.0.0.1", **n) for n in spec["nodes"]]
    cluster.wait_for_nodes()
    print(json.dumps({"address": cluster.address, "nodes": [n.node_id for n in nodes]}), flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "remove":
            cluster.remove_node(nodes[int(args[0])], allow_graceful=False)
            print("removed", flush=True)
        elif command == "stop":
            break
    cluster.shutdown()


if __name__ == "__main__":
    main()
