"""Fault injection at the edge: every bad input is refused with exit 2 and one line naming the field,
before anything is created, and without importing Ray or MLflow."""

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from ablations.run.cli import main
from tests.ablations.conftest import ROOT, TINY_BASE
from tests.ablations.helpers import plain_http_server


def _good(tmp_path, **base_sections) -> str:
    """A valid study as text, for the tests to break one way at a time."""
    base = yaml.safe_dump({**TINY_BASE, **base_sections}, default_flow_style=True, width=1000).strip()
    return (
        f"name: bad\nstorage: {tmp_path / 'ray'}\ntracking: {{uri: sqlite:///{tmp_path / 'mlflow.db'}}}\n"
        f"base: {base}\nvariants:\n  simmim: {{}}\n  mto: {{mto.lambda_e: 0.1}}\n"
    )


def _refused_once(tmp_path, capsys, data, *args: str) -> str:
    """Run the CLI on ``data`` (text or bytes); assert exit 2, one error line, nothing created; return the line."""
    path = tmp_path / "bad.yaml"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    assert main([str(path), *args]) == 2
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error"), err[:2000]
    assert len(lines[0]) < 1000, lines[0][:2000]
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()
    return lines[0]


def _bomb(levels: int = 9) -> str:
    text = 'name: bad\nvariants: {a: {}}\nx0: &x0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for i in range(1, levels + 1):
        text += f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]\n"
    return text


FILES = {  # name -> (file content, words the one line must hold)
    "alias bomb": (_bomb(), "aliases are expanded"),
    "alias cycle": ("name: bad\nvariants: &v {a: *v}\n", "a cycle"),
    "deep nesting": ("name: bad\nvariants: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested deeper than"),
    "UTF-16": ("name: bad\nvariants: {a: {}}\n".encode("utf-16"), "UTF-16"),
    "Latin-1": ("name: bad\ndescription: caf\xe9\nvariants: {a: {}}\n".encode("latin-1"), "not UTF-8"),
    "binary": (bytes(range(256)) * 4, "binary"),
    "control character": (b"name: bad\x07\nvariants: {a: {}}\n", "control character"),
    "over 1 MB": ("name: bad\nvariants: {a: {}}\ndescription: '" + "x" * 1_100_000 + "'\n", "larger than"),
    "empty": ("", "empty"),
    "a list at the top": ("- name: bad\n", "top level must be a mapping"),
}


@pytest.mark.parametrize("name", FILES)
def test_unreadable_or_oversized_file_is_refused_in_one_line(tmp_path, capsys, name):
    data, expected = FILES[name]
    assert expected in _refused_once(tmp_path, capsys, data)


def test_a_huge_bad_value_is_echoed_only_in_part(tmp_path, capsys):
    line = _refused_once(tmp_path, capsys, _good(tmp_path) + "seeds: '" + "9" * 100_000 + "'\n")
    assert "seeds (line" in line and "more characters" in line and len(line) < 600


def test_a_huge_set_value_is_bounded_too(tmp_path, capsys):
    value = "[" + ", ".join(["*a"] * 5) + "]"
    line = _refused_once(
        tmp_path, capsys, _good(tmp_path), "--set", f"description=&a {'x' * 300}", "--set", f"seeds={value}"
    )
    assert "seeds" in line


def test_a_set_value_over_the_files_is_blamed_on_the_set(tmp_path, capsys):
    line = _refused_once(tmp_path, capsys, _good(tmp_path), "--set", "base.train.epochs=0")
    assert "base.train.epochs (--set): 0 is invalid" in line, line


SETTINGS = {  # name -> (edit of the good study, words the one line must hold)
    "batch above the training set": (
        lambda t: t.replace("batch_size: 64", "batch_size: 5000"),
        "base.train.batch_size (line 4): 5000 is above the 256 training images",
    ),
    "batch above digits": (
        lambda t: t.replace("max_train: 256", "max_train: 100000").replace("batch_size: 64", "batch_size: 2000"),
        "above the 1,293 training images",
    ),
    "heads not dividing the width": (
        lambda t: t.replace("num_heads: 2", "num_heads: 3"),
        "base.model.num_heads (line 4): 3 heads do not divide the width 32",
    ),
    "decoder heads": (
        lambda t: t.replace("mto: {mto.lambda_e: 0.1}", "mto: {mim.method: mae, mim.decoder_heads: 5}"),
        "variants.mto.mim.decoder_heads",
    ),
    "cuda without a GPU": (
        lambda t: t.replace("mto: {mto.lambda_e: 0.1}", "mto: {train.device: cuda}"),
        "variants.mto.train.device",
    ),
    "seed beyond 2^63": (lambda t: t + "seeds: [0, 9223372036854775808]\n", "seeds (line"),
    "infinite lr": (lambda t: t.replace("epochs: 3", "epochs: 3, base_lr: .inf"), "base.train.base_lr"),
    "infinite loss weight": (
        lambda t: t.replace("mto.lambda_e: 0.1", "mto.lambda_e: .inf"),
        "variants.mto.mto.lambda_e",
    ),
    "NaN margin": (lambda t: t.replace("mto.lambda_e: 0.1", "mto.margin: .nan"), "variants.mto.mto.margin"),
    "infinite cpu": (lambda t: t + "resources: {cpu: .inf}\n", "resources.cpu (line"),
    "infinite fraction": (lambda t: t + "target: {fraction: .inf}\n", "target.fraction (line"),
    "target above 100%": (lambda t: t + "target: {fraction: 5}\n", "must stay below 100%"),
    "report epoch after the end": (lambda t: t + "report_epochs: [1, 30]\n", "report_epochs (line"),
    "report epoch 0": (lambda t: t + "report_epochs: [0]\n", "report_epochs (line"),
    "probe off": (
        lambda t: t.replace("mto: {mto.lambda_e: 0.1}", "mto: {eval.linear: false}"),
        "target.metric (default): 'eval/linear_top1' is never logged: eval.linear is false (that probe is off) "
        "(trial mto-s0)",
    ),
    "misspelt metric": (lambda t: t + "target: {metric: eval/linear_top}\n", "unknown metric"),
    "hetero layer beyond the stack": (lambda t: t + "target: {metric: hetero/l09}\n", "layers 0 to 2"),
    "kNN k above the probe set": (
        lambda t: t.replace("probe_steps: 20", "probe_steps: 20, knn_k: 500"),
        "base.eval.knn_k (line 4): 500 is above the 256 images",
    ),
    "BootMAE context block beyond the encoder": (
        lambda t: t.replace("mto: {mto.lambda_e: 0.1}", "mto: {mim.method: bootmae, mim.context_blocks: [0, 5]}"),
        "mim.context_blocks=[0, 5] is invalid: block indices 0 to 1 (the encoder has 2 blocks)",
    ),
    "DTM teacher missing": (
        lambda t: t.replace(
            "mto: {mto.lambda_e: 0.1}", "mto: {mim.method: dtm, mim.dtm_teacher: /nonexistent/teacher.pt}"
        ),
        "an existing local checkpoint file",
    ),
    "DTM teacher not a checkpoint": (
        lambda t: t.replace("mto: {mto.lambda_e: 0.1}", "mto: {mim.method: dtm, mim.dtm_teacher: /etc/hostname}"),
        "mim.dtm_teacher='/etc/hostname' is invalid: a checkpoint written by torch.save",
    ),
    "DTM merges beyond the patches": (
        lambda t: t.replace("mto: {mto.lambda_e: 0.1}", "mto: {mim.method: dtm, mim.dtm_max_merges: 1000000}"),
        "at most the 64 patches",
    ),
    "split seed beyond 2^63": (
        lambda t: t.replace("max_train: 256", "max_train: 256, split_seed: 18446744073709551616"),
        "base.data.split_seed (line 4): 18446744073709551616 is invalid: an integer in [0, 2^63 - 1]",
    ),
    "a trillion synthetic images": (
        lambda t: t.replace("max_train: 256", "max_train: 256, name: synthetic, synthetic_size: [1000000000000, 100]"),
        "base.data.synthetic_size (line 4): [1000000000000, 100] is invalid",
    ),
    "synthetic images beyond memory": (
        lambda t: t.replace(
            "max_train: 256", "max_train: 256, name: synthetic, image_size: 256, synthetic_size: [9000000, 100]"
        ),
        "GiB of memory; this machine has",
    ),
    "a trillion epochs": (lambda t: t.replace("epochs: 3", "epochs: 1000000000000"), "an integer from 1 to 100,000"),
    "a trillion-epoch budget": (lambda t: t + "budgets: [2, 1000000000000]\n", "budgets (line"),
    "ASHA grace period beyond the training": (
        lambda t: (
            t + "search: {kind: optuna, metric: val/knn_top1, space: {train.base_lr: {loguniform: [0.0001, 0.01]}}, "
            "asha: {grace_period: 5}}\n"
        ),
        "search.asha.grace_period (line 8): 5 is above train.epochs=3",
    ),
    "no search seeds": (
        lambda t: (
            t + "search: {kind: optuna, seeds: [], metric: val/knn_top1, space: {train.base_lr: "
            "{loguniform: [0.0001, 0.01]}}}\n"
        ),
        "search.seeds (line 8): [] is invalid: an empty list",
    ),
    "no report epochs": (lambda t: t + "report_epochs: []\n", "or null (the default: first, middle and last)"),
    "references in a cycle": (
        lambda t: t + "target: {reference_of: {simmim: mto, mto: simmim}}\n",
        "simmim -> mto -> simmim is a cycle",
    ),
    "heterogeneity batch above the test set": (
        lambda t: t.replace("hetero_batch: 16", "hetero_batch: 1000"),
        "base.eval.hetero_batch (line 4): 1000 is above the 360 test images",
    ),
    "affinity epoch beyond the training": (
        lambda t: t.replace("affinity_epochs: [3]", "affinity_epochs: [30]"),
        "base.eval.affinity_epochs (line 4): [30] is invalid: epochs 1 to train.epochs=3",
    ),
    "300-character name": (lambda t: t.replace("name: bad", "name: " + "n" * 300), "name (line 1): 300 characters"),
    "storage is a file": (lambda t: t.replace("storage: ", "storage: /etc/hostname/"), "storage (line 2)"),
    "storage not writable": (lambda t: t.replace("storage: ", "storage: /proc/1/x"), "storage (line 2)"),
    "storage URI of no file system": (
        lambda t: t.replace("storage: /", "storage: ftp://host/"),
        "is invalid: a folder, or a URI of file, s3, gs",
    ),
    "a default that cannot work with a set value": (
        lambda t: t.replace("hetero_batch: 16", "hetero_batch: 16, finetune: {enabled: true, epochs: 2}"),
        "base.eval.finetune.warmup_epochs (default): 2 is invalid: an integer in [0, eval.finetune.epochs=2)",
    ),
    "a billion fine-tuning epochs": (
        lambda t: t.replace("hetero_batch: 16", "hetero_batch: 16, finetune: {epochs: 1000000000}"),
        "base.eval.finetune.epochs (line 4): 1000000000 is invalid: an integer from 1 to 10,000",
    ),
    "more trials than a study may have": (
        lambda t: t + f"seeds: {list(range(1000))}\ngrid: {{mto.tau: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}}\n",
        "variants x grid x seeds: 12,000 trials, above the 10,000 a study may have",
    ),
    "an Optuna range past a setting's bound": (
        lambda t: t + "search: {kind: optuna, space: {eval.probe_steps: {int: [1, 100000000000]}}}\n",
        "search.space.eval.probe_steps.int: the sample eval.probe_steps=100000000000 is an invalid trial",
    ),
    "a million Optuna samples": (
        lambda t: t + "search: {kind: optuna, num_samples: 1000000, space: {mto.tau: {uniform: [0.1, 0.2]}}}\n",
        "search.num_samples (line 8): 1000000 is invalid",
    ),
    "retries without end": (lambda t: t + "retries: 1000000\n", "retries (line 8): 1000000 is invalid"),
    "a target where lower is better": (
        lambda t: t + "target: {metric: train/loss}\n",
        "target.metric (line 8): train/loss is invalid: lower is better for it",
    ),
    "a search the other way from its metric": (
        lambda t: (
            t + "search: {kind: optuna, mode: min, metric: val/knn_top1, space: {mto.tau: {uniform: [0.1, 0.2]}}}\n"
        ),
        "search.mode (line 8): min is invalid for val/knn_top1: higher is better for it, so max",
    ),
    "a warm-up longer than the training": (
        lambda t: t.replace("warmup_epochs: 1", "warmup_epochs: 1000"),
        "base.train.warmup_epochs (line 4): 1000 is invalid: an integer in [0, train.epochs=3]",
    ),
    "evaluations further apart than the training": (
        lambda t: t.replace("every: 1", "every: 5"),
        "base.eval.every (line 4): 5 is invalid: an integer from 1 to train.epochs=3",
    ),
    "a layer beyond the encoder": (
        lambda t: t.replace("mto.lambda_e: 0.1", "mto.lambda_e: 0.1, mto.layers_e: [0, 99]"),
        "mto.layers_e=[0, 99] is invalid: layer indices of layers 0 to 2 (the encoder of simmim has 2 blocks",
    ),
    "layer weights for another depth": (
        lambda t: t.replace("mto.lambda_e: 0.1", "mto.lambda_r: 0.1, mto.layers_r: [1.0, 0.5]"),
        "mto.layers_r=[1.0, 0.5] is invalid: 3 weights, one for each of layers 0 to 2",
    ),
    "early layers beyond the decoder": (
        lambda t: t.replace(
            "mto.lambda_e: 0.1", "mim.method: mae, mim.decoder_depth: 1, mto.lambda_e: 0.1, mto.layers_e: 'early:3'"
        ),
        "mto.layers_e='early:3' is invalid: early:k with k from 1 to 2, the layers 0 to 1 (the decoder of mae has 1 "
        "block;",
    ),
    "a lambda warm-up longer than the training": (
        lambda t: t.replace("mto.lambda_e: 0.1", "mto.lambda_schedule: linear_warmup, mto.lambda_warmup_epochs: 10"),
        "mto.lambda_warmup_epochs=10 is invalid: an integer in [0, train.epochs=3]",
    ),
    "a BootMAE ramp longer than the training": (
        lambda t: t.replace("mto.lambda_e: 0.1", "mim.method: bootmae, mim.feature_weight_ramp_epochs: 10"),
        "mim.feature_weight_ramp_epochs=10.0 is invalid: a number of epochs from 0 to train.epochs=3",
    ),
    "MAE-family option on SimMIM": (
        lambda t: t + "  blocks: {mim.block_masking: true}\n",
        "mim.block_masking=True is invalid: null unless mim.method is mae or bootmae",
    ),
}


@pytest.mark.parametrize("name", SETTINGS)
def test_setting_that_cannot_work_is_refused_before_start(tmp_path, capsys, name):
    edit, expected = SETTINGS[name]
    line = _refused_once(tmp_path, capsys, edit(_good(tmp_path)))
    assert expected in " ".join(line.split()), line


@pytest.mark.parametrize(
    "edit, heavy",
    [
        (lambda t: t.replace("num_heads: 2", "num_heads: 3"), {"ray", "mlflow", "optuna"}),
        # a typo is refused before torch loads too: the refusal a user sees most is the fastest
        (lambda t: t.replace("mto.lambda_e: 0.1", "mto.lamda_e: 0.1"), {"ray", "mlflow", "optuna", "torch", "timm"}),
    ],
)
def test_a_refusal_imports_none_of_the_heavy_libraries(tmp_path, edit, heavy):
    path = tmp_path / "bad.yaml"
    path.write_text(edit(_good(tmp_path)))
    code = (
        "import sys; from ablations.run.cli import main; rc = main([sys.argv[1]]); "
        f"print(rc, sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(heavy)!r})))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )
    assert proc.stdout.split("\n")[0] == "2 []", proc.stdout + proc.stderr


@pytest.fixture
def not_mlflow(tmp_path):
    """A plain HTTP file server on 127.0.0.1 whose /health answers 200 (a file), but which is not MLflow."""
    with plain_http_server(tmp_path) as address:
        yield f"http://{address}"


TRACKING = {  # name -> (tracking URI given a tmp folder, words the one line must hold)
    "SQLite path is a folder": (lambda d: f"sqlite:///{d}", "is a folder"),
    "SQLite folder not writable": (lambda d: "sqlite:////proc/mlflow.db", "cannot be created here"),
    "SQLite folder missing": (lambda d: f"sqlite:///{d}/none/mlflow.db", "does not exist"),
    "file that is not a database": (lambda d: f"sqlite:///{d / 'bad.yaml'}", "not a SQLite database"),
    "unknown scheme": (lambda d: "ftp://example.org/mlflow", "unknown scheme 'ftp'"),
    "two-slash sqlite": (lambda d: "sqlite://mlflow.db", "sqlite:/// followed by a file path"),
}


@pytest.mark.parametrize("name", TRACKING)
def test_unusable_tracking_store_is_refused_before_any_run_exists(tmp_path, capsys, name):
    uri, expected = TRACKING[name]
    line = _refused_once(tmp_path, capsys, _good(tmp_path), "--tracking-uri", uri(tmp_path))
    assert expected in line, line
    assert not list(tmp_path.glob("**/ablation.json"))


ADDRESSES = {  # --address -> words the one line must hold (an HTTP server and a silent one: test_refusals.py)
    "not an address": "--address 'not an address' is not a Ray address: give auto",
    "127.0.0.1:99999": "is not a Ray address",
    "127.0.0.1:1": "--address '127.0.0.1:1': no Ray cluster answers at 127.0.0.1:1 (Connection refused",
}


@pytest.mark.parametrize("address", ADDRESSES)
def test_a_cluster_address_that_is_wrong_or_answers_nothing_is_refused_at_once(tmp_path, capsys, address):
    line = _refused_once(tmp_path, capsys, _good(tmp_path), "--address", address)
    assert ADDRESSES[address] in line, line


def test_http_server_that_is_not_mlflow_is_refused(tmp_path, capsys, not_mlflow):
    line = _refused_once(tmp_path, capsys, _good(tmp_path), "--tracking-uri", not_mlflow)
    assert "not as an MLflow tracking server" in line, line


def test_dry_run_shows_the_plan_then_the_missing_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    path = tmp_path / "bad.yaml"
    path.write_text(_good(tmp_path, data={"name": "cifar10", "path": str(tmp_path / "none")}))
    assert main([str(path), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert "2 trials" in out and "mto-s0" in out
    assert "data.path=" in err and "cifar10" in err
    assert not (tmp_path / "ray").exists()


def test_an_arm_that_cuts_the_data_below_a_batch_is_blamed_on_its_max_train(tmp_path, capsys):
    line = _refused_once(tmp_path, capsys, _good(tmp_path).replace("mto.lambda_e: 0.1", "data.max_train: 30"))
    assert "variants.mto.data.max_train (line 7): 30 training images are fewer than train.batch_size=64" in line, line


def test_a_dtm_teacher_is_read_into_the_configured_encoder_before_start(tmp_path, capsys):
    import torch

    from mto.config import ModelConfig
    from mto.methods.backbone import create_vit

    def teacher(depth: int) -> str:
        path = tmp_path / f"teacher{depth}.pt"
        torch.save(
            create_vit(ModelConfig(embed_dim=32, depth=depth, num_heads=2), img_size=16, in_chans=1).state_dict(), path
        )
        return str(path)

    study = _good(tmp_path).replace(
        "mto: {mto.lambda_e: 0.1}", f"mto: {{mim.method: dtm, mim.dtm_teacher: {teacher(2)}}}"
    )
    (tmp_path / "good.yaml").write_text(study)
    assert main([str(tmp_path / "good.yaml"), "--dry-run"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    shutil.rmtree(tmp_path / "ray")  # the paces the dry run measured, kept for the next one
    line = _refused_once(tmp_path, capsys, study.replace(teacher(2), teacher(3)))
    assert "teacher3.pt' is invalid: weights of the configured encoder (Error(s) in loading state_dict" in line, line


def test_the_driver_loads_no_torch_to_run_a_study(tmp_path):
    """Torch loads in the trials' processes only: the driver (its CLI, the study's validation with its data check,
    Ray Tune, the trial function it ships, the tracker) starts seconds sooner without it."""
    study = tmp_path / "good.yaml"
    study.write_text(_good(tmp_path))
    modules = "cli, runner, phases, tuner, held_decisions, trainable, callbacks, tracking, cluster, hold, outcome"
    code = (
        f"import sys; from ablations.run import {modules}; from ablations.study import load_study; "
        f"load_study({str(study)!r}); print(sorted({{'torch', 'timm'}} & set(sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
