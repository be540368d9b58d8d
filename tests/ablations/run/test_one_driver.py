"""One driver per study: a second ``run`` or ``--resume`` of a running study is refused before it writes anything,
and the first finishes every trial; a holder that died (``kill -9``) is taken over. Real OS locks, a real local Ray
cluster and a real MLflow store."""

import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from ablations.run.hold import StudyHeld, StudyHold
from tests.ablations.conftest import TINY_BASE, run_cli, write_study
from tests.ablations.helpers import start_driver, steps, study_runs, wait_for

EPOCHS = 150  # short epochs (128 images), many: the first driver still trains while the others are refused


def _holder(folder) -> subprocess.Popen:
    """Another process that takes the hold of study ``tiny`` (lock file ``folder/driver.lock``) and keeps it until
    killed."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from ablations.run.hold import StudyHold
        StudyHold({str(folder / "driver.lock")!r}, "tiny").take()
        print("held", flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_is_named_and_a_dead_one_is_taken_over(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(StudyHeld) as refused:
            StudyHold(tmp_path / "driver.lock", "tiny").take()
        message = str(refused.value)
        assert f"process {holder.pid} on host {socket.gethostname()}, since " in message, message
        assert "--resume" in message and "\n" not in message
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding it: the kernel lets the lock go, the file still names it
        holder.wait()
    with StudyHold(tmp_path / "driver.lock", "tiny") as hold:
        assert hold.taken_over is not None and hold.taken_over.pid == holder.pid
    again = StudyHold(tmp_path / "driver.lock", "tiny").take()  # released cleanly: nothing to take over
    assert again.taken_over is None
    again.release()


@pytest.mark.slow
def test_a_second_driver_is_refused_and_the_first_finishes_every_trial_once(tmp_path):
    base = {
        **TINY_BASE,
        "data": {"max_train": 128},
        "train": {**TINY_BASE["train"], "epochs": EPOCHS},
        "eval": {**TINY_BASE["eval"], "every": EPOCHS},
    }
    path = write_study(tmp_path, base=base)  # 2 arms, one seed each
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = start_driver(path, tmp_path)
    wait_for(first, uri, lambda c: any(len(steps(uri, r, "train/loss")) >= 1 for r in c.values()))
    folders = sorted((tmp_path / "ray" / "tiny").iterdir())
    listener = socket.create_server(("127.0.0.1", 0))  # answers as a cluster's head would: the hold is checked next
    try:
        for args in (["--resume"], [], ["--resume", "--address", f"127.0.0.1:{listener.getsockname()[1]}"]):
            second = run_cli(str(path), "--no-report", *args, cwd=tmp_path, timeout=120)
            assert second.returncode == 2, second.stderr[-2000:]
            lines = [line for line in second.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and "is being run by another driver" in lines[0], second.stderr
            assert f"process {first.pid} on host {socket.gethostname()}" in lines[0], lines[0]
            assert first.poll() is None, "the first driver ended before the others were refused (nothing tested)"
    finally:
        listener.close()
    assert sorted((tmp_path / "ray" / "tiny").iterdir()) == folders  # nothing written by the refused drivers
    output = first.communicate(timeout=600)[0]
    assert first.returncode == 0, output[-3000:]
    parents, children = study_runs(uri)
    assert len(parents) == 1 and len(children) == 2
    for name, run in children.items():
        assert run.info.status == "FINISHED", name
        assert steps(uri, run, "train/loss") == list(range(1, EPOCHS + 1)), name  # every epoch once
    assert (tmp_path / "ray" / "tiny" / "driver.lock").read_text() == ""  # let go cleanly: nothing to take over
