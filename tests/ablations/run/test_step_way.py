"""How a trial's steps ran reaches its MLflow run and the driver's output: the driver's session, on a real tracker
and a real SQLite store, given the keys a trial reports (a real unit's ``EpochReport`` after its compile failed,
through the trial function's ``Payload`` shape), tags the run and prints one line when the step fell back."""

import io

from mlflow import MlflowClient

from ablations.contract import STEP_FALLBACK_TAG, STEP_FALLBACKS, STEP_TAG, STEP_WAY
from tests.ablations.helpers import driver_session

CUDA_GRAPHS_FAILED = "compiled with CUDA graphs failed: RuntimeError: CUDA graph capture failed"
COMPILED_FAILED = "compiled failed: BackendCompilerFailed: RuntimeError: no working C++ compiler"


def test_the_run_says_how_its_steps_ran_and_the_driver_prints_each_fallback_once(tmp_path, mlflow_schema):
    out = io.StringIO()
    study, uri, tracker, _, session = driver_session(tmp_path, mlflow_schema, epochs=3, out=out)
    steady, falls = (tracker.open_trial(t) for t in study.trials)

    for epoch in (0, 1, 2):
        session._log(steady, epoch, {"train/loss": 1.0, STEP_WAY: "eager"})
    session._log(falls, 0, {STEP_WAY: "compiled with CUDA graphs"})  # before any step
    session._log(falls, 1, {STEP_WAY: "compiled", STEP_FALLBACKS: [CUDA_GRAPHS_FAILED]})
    session._log(falls, 2, {STEP_WAY: "compiled", STEP_FALLBACKS: [CUDA_GRAPHS_FAILED]})  # said already
    session._log(falls, 3, {STEP_WAY: "eager", STEP_FALLBACKS: [CUDA_GRAPHS_FAILED, COMPILED_FAILED]})

    assert tracker.flush()  # the journal's writer thread has made every write
    client = MlflowClient(uri)
    tags = {name: client.get_run(tracker.run_id(name)).data.tags for name in (steady, falls)}
    assert tags[steady][STEP_TAG] == "eager" and STEP_FALLBACK_TAG not in tags[steady]
    assert tags[falls][STEP_TAG] == "eager"
    assert tags[falls][STEP_FALLBACK_TAG] == f"{CUDA_GRAPHS_FAILED}; {COMPILED_FAILED}"
    lines = [l for l in out.getvalue().splitlines() if "its step now runs" in l]
    assert lines == [
        f"{falls}: its step now runs compiled ({CUDA_GRAPHS_FAILED})",
        f"{falls}: its step now runs eager ({COMPILED_FAILED})",
    ]
