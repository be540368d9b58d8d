"""The default SQLite store, shared: two studies started a second apart in a fresh folder (the second driver waits
while the first makes the store's tables), and, while both train, another process holding the store's write lock
(``BEGIN EXCLUSIVE``, as another study writing, ``ablations.report`` writing back, a backup or a sync tool would)
for longer than the busy timeout MLflow gives SQLite (20 s). The drivers keep their writes meanwhile and make them
once the lock is gone: both exit 0, every trial FINISHED with every epoch logged once. Real drivers, real Ray,
real SQLite locks."""

import subprocess
import sys
import time

import pytest
import yaml

from tests.ablations.conftest import TINY_BASE
from tests.ablations.helpers import start_driver, steps, study_runs

pytestmark = [pytest.mark.slow, pytest.mark.no_store]

EPOCHS = 100  # short epochs (128 images, probes at the first and last only): trials still train when the lock comes
LOCK_S = 25  # past MLflow's 20 s busy timeout for SQLite


def _study(folder, name: str):
    base = {
        **TINY_BASE,
        "data": {"max_train": 128},
        "train": {**TINY_BASE["train"], "epochs": EPOCHS},
        "eval": {**TINY_BASE["eval"], "every": EPOCHS, "affinity_epochs": []},
    }
    study = {"name": name, "base": base, "variants": {"simmim": {}}, "seeds": [0], "resources": {"cpu": 1}}
    path = folder / f"{name}.yaml"  # storage and tracking left to their defaults: ray_results/ and mlflow.db here
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def _hold_write_lock(db, seconds: float) -> subprocess.Popen:
    code = (
        "import sqlite3, sys, time\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)\n"
        "db.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        f"time.sleep({seconds})\n"
        "db.execute('COMMIT')\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_two_fresh_studies_share_the_default_store_through_a_lock_held_past_its_busy_timeout(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = start_driver(_study(tmp_path, "alpha"), tmp_path)
    time.sleep(1)
    second = start_driver(_study(tmp_path, "beta"), tmp_path)
    drivers = {"alpha": first, "beta": second}

    def epochs(name: str) -> int:
        try:
            return len(steps(uri, study_runs(uri, name)[1]["simmim-s0"], "train/loss"))
        except Exception:  # noqa: BLE001 - the store, its experiment or the run may not exist yet
            return 0

    deadline = time.monotonic() + 400
    while not all(epochs(name) >= 2 for name in drivers):
        for name, driver in drivers.items():
            assert driver.poll() is None, f"{name} ended: {driver.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "the studies did not start"
        time.sleep(0.5)
    holder = _hold_write_lock(tmp_path / "mlflow.db", LOCK_S)
    assert all(d.poll() is None for d in drivers.values()), "a study ended before the lock: nothing tested"
    holder.wait(timeout=LOCK_S + 60)

    outputs = {}
    for name, driver in drivers.items():
        outputs[name] = driver.communicate(timeout=600)[0]
        assert driver.returncode == 0, f"{name}: {outputs[name][-3000:]}"
        assert "Traceback" not in outputs[name], outputs[name][-3000:]
    assert any("is busy (" in said and "database is locked" in said for said in outputs.values()), outputs
    for name in drivers:
        parents, children = study_runs(uri, name)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED", name
        run = children["simmim-s0"]
        assert run.info.status == "FINISHED", name
        assert steps(uri, run, "train/loss") == list(range(1, EPOCHS + 1)), name  # every epoch, once
