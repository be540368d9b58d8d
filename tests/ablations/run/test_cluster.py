"""Studies on a Ray cluster of several real nodes (``--address``): Ray's own ``cluster_utils.Cluster`` started on
this machine (tests/ablations/ray_nodes.py), each node a raylet with its own resources, and real MLflow.

Trials spread over the nodes; every run and epoch reaches MLflow once, affinity maps and encoders included,
through Ray's results; with ``storage`` on an S3 server (moto's, on 127.0.0.1) no file system is shared at all;
declared GPUs pack fractional trials; a node killed mid-study restarts its trials elsewhere (``retries: 1``) or
fails them with the reason (``retries: 0``); a driver killed and started again with ``--resume --address`` goes
on from the cluster's state."""

import os
import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ablations.contract import NODE_TAG, RESUMED, lost_machine, own_failure
from tests.ablations.conftest import TINY_BASE, run_cli, write_study
from tests.ablations.helpers import s3_server, start_driver, study_runs, wait_for
from tests.ablations.ray_nodes import LOOPBACK, ray_nodes

pytestmark = pytest.mark.slow

HEAD = {"num_cpus": 0}  # the head schedules nothing: every trial runs on a worker node


def _study(tmp_path: Path, epochs: int, affinity: bool = True, **fields) -> Path:
    base = {
        **TINY_BASE,
        "train": {**TINY_BASE["train"], "epochs": epochs},
        "eval": {**TINY_BASE["eval"], "every": epochs, "affinity_epochs": [epochs] if affinity else []},
    }
    return write_study(tmp_path, base=base, **fields)


def _epochs(client: MlflowClient, run) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))


def _logged(children, epoch: int) -> bool:
    """Whether some trial has logged ``epoch`` (``trial/epoch``, its latest value)."""
    return any(r.data.metrics.get("trial/epoch", 0) >= epoch for r in children.values())


def _bucket_keys(env: dict[str, str], bucket: str) -> list[str]:
    """The object keys in ``bucket`` of the S3 server."""
    listing = urllib.request.urlopen(f"{env['AWS_ENDPOINT_URL']}/{bucket}?list-type=2&max-keys=10000").read().decode()
    return re.findall(r"<Key>([^<]*)</Key>", listing)


def _state_records_a_checkpoint(env: dict[str, str], bucket: str) -> bool:
    """Whether Ray Tune's experiment state on S3 (synced every few seconds) names a trial checkpoint yet."""
    states = [k for k in _bucket_keys(env, bucket) if "/experiment_state-" in k]
    return any(
        b"checkpoint_0" in urllib.request.urlopen(f"{env['AWS_ENDPOINT_URL']}/{bucket}/{k}").read() for k in states
    )


def test_a_study_spreads_over_two_nodes_with_s3_storage_and_a_restarted_driver_goes_on(tmp_path):
    path = _study(tmp_path, epochs=12, storage="s3://studies/ray")  # two trials, one per node
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with s3_server("studies") as s3, ray_nodes(HEAD, {"num_cpus": 1}, {"num_cpus": 1}, env=s3) as cluster:
        env = {**LOOPBACK, **s3}
        driver = start_driver(path, tmp_path, "--address", cluster.address, env=env)
        wait_for(driver, uri, lambda children: _logged(children, 1))
        while not _state_records_a_checkpoint(s3, "studies"):  # else the resumed trials rightly start over
            assert driver.poll() is None
            time.sleep(0.5)
        os.killpg(driver.pid, signal.SIGKILL)  # the driver dies; the cluster's nodes stay up
        driver.wait()
        resumed = run_cli(str(path), "--resume", "--address", cluster.address, cwd=tmp_path, env=env)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        nodes, listing = set(cluster.nodes), _bucket_keys(s3, "studies")
    parents, children = study_runs(uri)
    client = MlflowClient(uri)
    assert len(parents) == 1 and sorted(children) == ["mto-s0", "simmim-s0"]
    for name, run in children.items():
        assert run.info.status == "FINISHED", name
        assert _epochs(client, run) == list(range(1, 13)), name  # each epoch once, across the two drivers
        assert [a.path for a in client.list_artifacts(run.info.run_id, "affinity")] == ["affinity/affinity_e0012.npz"]
        assert len(client.list_artifacts(run.info.run_id, "encoder")) == 2, name  # from whichever node trained it
    assert {run.data.tags[NODE_TAG] for run in children.values()} == nodes  # trials ran on both nodes
    assert any(RESUMED in run.data.tags for run in children.values())  # the killed driver's trials went on
    assert any("/checkpoint_" in k for k in listing) and any("/experiment_state-" in k for k in listing)  # on S3
    assert not any(k.endswith((".npz", ".safetensors")) for k in listing)  # affinity maps and encoders came
    # through Ray's results, not storage
    assert len(list((tmp_path / "ray_results" / "tiny").glob("*/artifacts/*/affinity_e0012.npz"))) == 2  # the driver's
    assert client.list_artifacts(parents[0].info.run_id, "report")  # and the report was built


def _concurrency(children) -> int:
    """The most trials holding their resources at once: a run is created as Ray starts its trial and ended as
    the trial completes, so its start and end times bound the time Ray had the trial placed."""
    spans = [(r.info.start_time, r.info.end_time) for r in children.values()]
    return max(sum(start <= t < end for start, end in spans) for t, _ in spans)


def test_fractional_gpus_pack_two_trials_per_declared_gpu_and_whole_gpus_one(tmp_path):
    with ray_nodes(HEAD, {"num_cpus": 4, "num_gpus": 1}) as cluster:  # a GPU as Ray sees it; no CUDA here
        measured = {}
        for gpu in (0.5, 1):  # two trials each
            folder = tmp_path / f"gpu{gpu}"
            folder.mkdir()
            path = _study(folder, epochs=5, affinity=False, resources={"cpu": 1, "gpu": gpu})
            proc = run_cli(str(path), "--no-report", "--address", cluster.address, cwd=folder, env=LOOPBACK)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            uri = f"sqlite:///{folder}/mlflow.db"
            _, children = study_runs(uri)
            assert all(r.info.status == "FINISHED" for r in children.values())  # train.device auto: the CPU
            measured[gpu] = _concurrency(children)
    assert measured == {0.5: 2, 1: 1}, measured


@pytest.mark.parametrize("retries", [1, 0])
def test_a_node_killed_mid_study(tmp_path, retries):
    """retries 1: the trial of the lost node goes on elsewhere. retries 0: it is FAILED with the machine's reason,
    and a lost machine is never the trial's fault: run again by --resume, it loses its node a second time, and the
    next --resume still runs it (to the end), however alike the two losses read."""
    # long enough that the node dies while its trial still trains: epochs of the tiny model take a fraction of a second
    epochs = 16
    path = _study(
        tmp_path, epochs=epochs, seeds=[0], variants={"simmim": {}, "mto": {"mto.lambda_e": 0.1}}, retries=retries
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    workers = [{"num_cpus": 1}] * (2 if retries else 3)  # retries 0: a node for each of the victim's runs
    with ray_nodes(HEAD, *workers) as cluster:
        driver = start_driver(path, tmp_path, "--address", cluster.address, env=LOOPBACK)
        children = wait_for(
            driver, uri, lambda c: len(c) == 2 and all(NODE_TAG in r.data.tags for r in c.values()) and _logged(c, 2)
        )
        victim = next(name for name, r in children.items() if int(r.data.metrics.get("trial/epoch", 0)) >= 2)
        killed = cluster.nodes.index(children[victim].data.tags[NODE_TAG])
        cluster.remove(killed)
        output, _ = driver.communicate(timeout=600)
        survivor = cluster.nodes[1 - killed]
        if not retries:
            first_loss = study_runs(uri)[1][victim].data.tags["ablation.failure"]
            second_loss, last = _lose_the_node_again(cluster, path, tmp_path, uri, victim)
    _, children = study_runs(uri)
    client = MlflowClient(uri)
    other = next(name for name in children if name != victim)
    assert children[other].info.status == "FINISHED" and _epochs(client, children[other]) == list(range(1, epochs + 1))
    run = children[victim]
    if retries:
        assert driver.returncode == 0, output[-3000:]
        assert run.info.status == "FINISHED" and _epochs(client, run) == list(range(1, epochs + 1))  # each epoch once
        assert (
            int(run.data.tags[RESUMED]) >= 2 and run.data.tags[NODE_TAG] == survivor
        )  # its last checkpoint, elsewhere
    else:
        assert driver.returncode == 1, output[-3000:]
        assert f"FAILED {victim}" in output and "resume with:" in output, output[-4000:]
        for reason in (first_loss, second_loss):
            assert reason and not own_failure(reason) and lost_machine(reason), reason  # the machine's
        assert last.returncode == 0, last.stderr[-3000:]
        assert "running again from their last checkpoints 1 trials the machine failed" in last.stderr, last.stderr
        assert "not running again" not in last.stderr, last.stderr
        assert run.info.status == "FINISHED" and run.data.tags["ablation.failed_before"] == second_loss
        assert _epochs(client, run) == list(range(1, epochs + 1))  # each epoch once, across three drivers


def _lose_the_node_again(cluster, path, tmp_path, uri, victim):
    """--resume runs the victim again; its node is lost again once it has trained an epoch there; a last --resume
    runs it to the end. Returns (the second loss's reason, the last driver's completed process)."""
    run = study_runs(uri)[1][victim]
    before, lost = int(run.data.metrics.get("trial/epoch", 0)), run.data.tags[NODE_TAG]
    driver = start_driver(path, tmp_path, "--resume", "--address", cluster.address, env=LOOPBACK)

    def trains_elsewhere(c) -> bool:
        r = c[victim]
        return int(r.data.metrics.get("trial/epoch", 0)) > before and r.data.tags[NODE_TAG] != lost

    children = wait_for(driver, uri, trains_elsewhere)
    cluster.remove(cluster.nodes.index(children[victim].data.tags[NODE_TAG]))
    output = driver.communicate(timeout=600)[0]
    assert driver.returncode == 1, output[-3000:]
    reason = study_runs(uri)[1][victim].data.tags["ablation.failure"]
    last = run_cli(str(path), "--resume", "--no-report", "--address", cluster.address, cwd=tmp_path, env=LOOPBACK)
    return reason, last
