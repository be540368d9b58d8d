"""On CUDA (``make test-gpu``; skipped without a GPU): a study through Ray Tune and MLflow as a user runs it, two
trials sharing the GPU (``resources.gpu: 0.5``) with the default step (compiled, one CUDA graph per step), and a
third whose step runs out of GPU memory: that one fails with one line that says so, the two others finish, each
run with its GPU's ``system/gpu_*`` metrics and the tag saying its step ran compiled with CUDA graphs."""

import pytest
import torch
from mlflow import MlflowClient

from ablations.contract import FAILURE, STEP_FALLBACK_TAG, STEP_TAG, SYSTEM_PREFIX
from tests.ablations.conftest import run_cli, write_study
from tests.ablations.helpers import study_runs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

# batches of 65,536 images of 32x32 cut into 1,024 patches of width 2,048: the patch embedding's output alone is
# 275 GB in bf16, more than any GPU holds, so the first step fails at once without filling the GPU the other
# trials share; eager, so that it fails before minutes of compiling
OUT_OF_MEMORY = {
    "data.name": "synthetic",
    "data.image_size": 32,
    "data.synthetic_size": [73000, 64],  # 65,700 training images once the validation split is carved out
    "data.max_train": None,
    "model.patch_size": 1,
    "model.embed_dim": 2048,
    "model.depth": 1,
    "model.num_heads": 16,
    "train.batch_size": 65536,
    "train.compile": False,
    "eval.max_probe_train": 256,
}


def test_two_trials_share_a_gpu_compiled_and_one_out_of_memory_fails_alone(tmp_path):
    path = write_study(
        tmp_path,
        variants={"simmim": {}, "mto": {"mto.lambda_e": 0.1, "mto.lambda_r": 0.1}, "oom": OUT_OF_MEMORY},
        resources={"gpu": 0.5},
    )
    proc = run_cli(str(path), "--no-report", cwd=tmp_path)
    print(proc.stderr[-3000:])
    assert proc.returncode == 1, proc.stderr  # a trial failed
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _, children = study_runs(uri)
    client = MlflowClient(uri)
    for name in ("simmim-s0", "mto-s0"):
        run = children[name]
        assert run.info.status == "FINISHED", name
        assert run.data.tags[STEP_TAG] == "compiled with CUDA graphs" and STEP_FALLBACK_TAG not in run.data.tags
        gpu = [k for k in run.data.metrics if k.startswith(f"{SYSTEM_PREFIX}gpu_")]
        assert gpu, f"{name} has no system/gpu_* metric: {sorted(run.data.metrics)}"
        assert [m.step for m in client.get_metric_history(run.info.run_id, gpu[0])][-1] == 3
    oom = children["oom-s0"]
    assert oom.info.status == "FAILED"
    assert oom.data.tags[FAILURE].startswith("GPUOutOfMemoryError: the GPU ran out of memory")
    assert "FAILED oom-s0: GPUOutOfMemoryError: the GPU ran out of memory" in proc.stderr
