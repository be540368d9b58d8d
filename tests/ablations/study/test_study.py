"""Study files: validation at the edge (exit 2, one message per problem, nothing created) and expansion."""

import pytest
import yaml

from ablations.run.cli import main
from ablations.study import StudyError, apply_set, load_study
from tests.ablations.conftest import ROOT, TINY_BASE, write_study

STUDIES = sorted((ROOT / "studies").glob("*.yaml"))


def _refused(tmp_path, capsys, text: str, *args: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main([str(path), *args]) == 2
    err = capsys.readouterr().err
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()
    assert not list(tmp_path.glob("**/ablation.json"))
    return " ".join(err.split())


def _good(tmp_path, **base_sections) -> str:
    """A valid study as text, for the tests to break one way at a time (base sections replaced as given)."""
    base = yaml.safe_dump({**TINY_BASE, **base_sections}, default_flow_style=True, width=1000).strip()
    return (
        f"name: bad\nstorage: {tmp_path / 'ray'}\ntracking: {{uri: sqlite:///{tmp_path / 'mlflow.db'}}}\n"
        f"base: {base}\nvariants:\n  simmim: {{}}\n  mto: {{mto.lambda_e: 0.1}}\n"
    )


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda t: t.replace("variants:", "variants:\n  [oops"), "YAML syntax error at line"),
        (lambda t: t.replace("name: bad", "name: bad\nseds: [0, 1]"), "unknown key 'seds'; did you mean 'seeds'?"),
        (lambda t: t + "seeds: three\n", "seeds (line"),
        (lambda t: t + "max_concurrent: -1\n", "max_concurrent (line"),
        (lambda t: t + "target: {reference: simim}\n", "target.reference (line"),
        (lambda t: t + "grid: {mto.tau: []}\n", "grid.mto.tau (line"),
        (lambda t: t.replace("  simmim: {}", "  simmim: {}\n  simmim: {mto.tau: 1}"), "duplicate key 'simmim'"),
        (lambda t: t + "resources: {gpu: 1.5}\n", "resources.gpu"),
        (lambda t: t.replace("mto.lambda_e: 0.1", "mto.lamda_e: 0.1"), "did you mean 'mto.lambda_e'?"),
        (lambda t: t.replace("mto.lambda_e: 0.1", "mim.mask_ratio: 1.5"), "mim.mask_ratio=1.5 is invalid"),
        (lambda t: t + "search: {kind: optuna}\n", "search.space"),
        (lambda t: t + "budgets: [5]\n", "budgets (line"),
        (lambda t: t + "budgets: [5, 5]\n", "budgets must be distinct"),
        (lambda t: t + "budgets: [2, 4]\ngrid: {train.epochs: [3, 6]}\n", "remove train.epochs from grid"),
        (
            lambda t: t + "budgets: [2, 4]\nsearch: {kind: optuna, space: {mto.tau: {uniform: [0.1, 1]}}}\n",
            "an Optuna study takes no budgets",
        ),
        (
            lambda t: t + "seeds: [0, 1]\nsearch: {kind: optuna, seeds: [7], space: {mto.tau: {uniform: [0.1, 1]}}}\n",
            "search.seeds",
        ),
        (
            lambda t: t + "search: {kind: optuna, metric: eval/knn_top1, space: {mto.tau: {uniform: [0.1, 1]}}}\n",
            "select on its validation twin 'val/knn_top1'",
        ),
        (
            lambda t: t + "search: {kind: optuna, metric: finetune/top1, space: {mto.tau: {uniform: [0.1, 1]}}}\n",
            "select on its validation twin 'val/finetune_top1'",
        ),
        (
            lambda t: t + "target: {metric: finetune/top1}\n",
            "target.metric (line 8): 'finetune/top1' is never logged: eval.finetune.enabled is false (no fine-tuning)",
        ),
        (
            lambda t: t.replace("mto.lambda_e: 0.1", "eval.finetune: {enabled: true, at: [1, 9]}"),
            "eval.finetune.at=[1, 9] is invalid: epochs 0 to train.epochs=3 ([9] lie outside the training)",
        ),
        (
            lambda t: t.replace("mto.lambda_e: 0.1", "eval.finetune: {enabled: true, batch_size: 300}"),
            "300 is above the 256 training images (digits, data.max_train, less the validation split): at most 256 "
            "(fine-tuning trains on them)",
        ),
        (
            lambda t: t.replace("mto.lambda_e: 0.1", "eval.finetune: {enabled: true, batch_size: 7}"),
            "an even integer from 2 to 65,536",
        ),
        (
            lambda t: (
                t + "search: {kind: optuna, metric: val/finetune_top1, asha: {grace_period: 1}, "
                "space: {mto.tau: {uniform: [0.1, 1]}}}\n"
            ),
            "search.asha",
        ),
        (
            lambda t: (
                t.replace("mto.lambda_e: 0.1", "eval.finetune.enabled: true") + "search: {kind: optuna, asha: "
                "{grace_period: 1}, space: {mto.tau: {uniform: [0.1, 1]}}}\n"
            ),
            "variants.mto.eval.finetune.enabled (line 7): true with search.asha",
        ),
    ],
)
def test_bad_study_is_refused_with_its_field_and_exit_2(tmp_path, capsys, edit, expected):
    err = _refused(tmp_path, capsys, edit(_good(tmp_path)))
    assert expected in err, err


def test_bad_base_value_names_the_field_the_value_and_what_is_allowed(tmp_path, capsys):
    err = _refused(tmp_path, capsys, _good(tmp_path, mim={"mask_ratio": 1.5}))
    assert "base.mim.mask_ratio (line 4): 1.5 is invalid: a number strictly between 0 and 1" in err


def test_wrong_type_is_refused(tmp_path, capsys):
    err = _refused(tmp_path, capsys, _good(tmp_path, train={"epochs": "many"}))
    assert "base.train.epochs" in err and "'many'" in err


def test_yaml_tags_that_construct_objects_are_refused(tmp_path, capsys):
    marker = tmp_path / "executed"
    text = _good(tmp_path) + f"description: !!python/object/apply:os.system ['touch {marker}']\n"
    err = _refused(tmp_path, capsys, text)
    assert "is not allowed: study files are data" in err and "python/object/apply" in err
    assert not marker.exists()


def test_missing_data_path_is_refused(tmp_path, capsys):
    err = _refused(tmp_path, capsys, _good(tmp_path, data={"name": "cifar10", "path": str(tmp_path / "none")}))
    assert "data.path=" in err and "an existing folder with the cifar10 data set" in err


def test_every_problem_gets_its_own_message(tmp_path, capsys):
    text = _good(tmp_path) + "target: {reference: simim}\ngrid: {mto.tau: []}\n"
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main([str(path)]) == 2
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error")]
    assert len(lines) == 2


def test_unreachable_tracking_server_is_reported_before_anything_starts(tmp_path, capsys):
    path = write_study(tmp_path)
    assert main([str(path), "--tracking-uri", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "unreachable" in err
    assert not list(tmp_path.glob("ray/**/ablation.json"))


def test_resume_without_an_earlier_invocation_is_refused(tmp_path, capsys):
    assert main([str(write_study(tmp_path)), "--resume"]) == 2
    assert "no earlier invocation" in capsys.readouterr().err


def test_dry_run_prints_the_trials_and_creates_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    path = write_study(tmp_path, seeds=[0, 1], grid={"mto.tau": [0.05, 0.1]})
    assert main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "8 trials" in out and "mto-s1-tau=0.05" in out
    # the one file a dry run keeps: the pace it measured, so the next dry run and the run say the cost at once
    made = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("ray/**/*") if p.is_file())
    assert made == ["ray/tiny/compile-cache/paces.json"], made
    assert not (tmp_path / "mlflow.db").exists()


def test_fused_units_group_only_fusable_trials_and_the_dry_run_shows_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    path = write_study(
        tmp_path,
        seeds=[0, 1, 2],
        resources={"fuse": 2},
        variants={
            "simmim": {},
            "mto": {"mto.lambda_e": 0.1},
            "lr": {"mto.lambda_e": 0.3, "train.base_lr": 0.01},
            "conmim": {"mim.method": "conmim"},
            "droppath": {"model.drop_path": 0.1},
        },
    )
    units = {name: [t.name for t in unit] for name, unit in load_study(path).units.items()}
    assert units == {  # study order, at most 2 per unit; lambdas and learning rates may differ inside a unit
        "simmim-s0+1": ["simmim-s0", "simmim-s1"],
        "simmim-s2": ["simmim-s2"],
        "mto-s0+1": ["mto-s0", "mto-s1"],
        "mto-s2+1": ["mto-s2", "lr-s0"],
        "lr-s1+1": ["lr-s1", "lr-s2"],
        **{f"{arm}-s{s}": [f"{arm}-s{s}"] for arm in ("conmim", "droppath") for s in range(3)},
    }
    assert units == {name: [t.name for t in unit] for name, unit in load_study(path).units.items()}  # stable
    assert main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "15 trials in 11 Ray trials (resources.fuse: 2)" in out and "fused unit" in out and "mto-s2+1" in out
    assert main([str(write_study(tmp_path, resources={"fuse": 0})), "--dry-run"]) == 2
    assert "resources.fuse" in capsys.readouterr().err


def test_expansion_crosses_arms_study_grid_arm_grid_and_seeds(tmp_path):
    path = write_study(
        tmp_path,
        seeds=[0, 1],
        grid={"mim.mask_ratio": [0.5, 0.7]},
        variants={"simmim": {}, "mto": {"mto.lambda_e": 0.1, "grid": {"mto.tau": [0.05, 0.1, 0.2]}}},
    )
    study = load_study(path)
    assert len(study.trials) == (1 + 3) * 2 * 2
    t = study.trial("mto-s1-mask_ratio=0.7-tau=0.2")
    assert (t.arm, t.seed, t.config.mim.mask_ratio, t.config.mto.tau, t.config.train.seed) == ("mto", 1, 0.7, 0.2, 1)
    assert t.config.mto.lambda_e == 0.1 and study.trial("simmim-s0-mask_ratio=0.5").config.mto.lambda_e == 0
    assert study.spec.reference == "simmim"
    assert t.reference == "simmim-s1-mask_ratio=0.7" and study.trial(t.reference).reference == t.reference


def test_each_arm_is_paired_with_its_own_reference(tmp_path):
    path = write_study(
        tmp_path,
        variants={
            "a": {},
            "a+mto": {"mto.lambda_e": 0.1},
            "b": {"mim.mask_ratio": 0.5},
            "b+mto": {"mim.mask_ratio": 0.5, "mto.lambda_e": 0.1},
        },
        target={"reference": "a", "reference_of": {"b+mto": "b"}},
    )
    study = load_study(path)
    assert {t.name: t.reference for t in study.trials} == {
        "a-s0": "a-s0",
        "a+mto-s0": "a-s0",
        "b-s0": "a-s0",
        "b+mto-s0": "b-s0",
    }


def test_set_overrides_nested_and_dot_path_keys():
    raw = {"base": {"train": {"epochs": 5}}, "variants": {"mto": {"mto.lambda_e": 0.1}}}
    apply_set(raw, "base.train.epochs=2")
    apply_set(raw, "variants.mto.mto.lambda_e=0.5")
    apply_set(raw, "seeds=[0, 1, 2]")
    assert raw["base"]["train"]["epochs"] == 2 and raw["variants"]["mto"]["mto.lambda_e"] == 0.5
    assert raw["seeds"] == [0, 1, 2]
    with pytest.raises(StudyError, match="expected key=value"):
        apply_set(raw, "seeds")


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_ready_studies_validate_and_run_on_digits_with_set(path):
    study = load_study(path, ["base.data.name=digits"])
    assert study.trials and study.spec.reference in study.spec.variants
    for arm in study.spec.variants:
        assert study.spec.reference_for(arm) in study.spec.variants


@pytest.mark.parametrize("gpu", [False, True])
def test_the_studies_the_throughput_benchmark_writes_validate(tmp_path, gpu):
    """``benchmarks/study_throughput.py`` runs studies it writes: each of its settings, at its default and smoke
    sizes, must pass the checks a user's study does (the benchmark would otherwise fail only when run)."""
    from argparse import Namespace

    from benchmarks.study_throughput import study

    for sizes in (dict(trials=8, epochs=3, images=50_000), dict(trials=2, epochs=1, images=256)):
        args = Namespace(**sizes, concurrent=4 if gpu else 2, fuse=4)
        for name, fuse in (("packed", 1), ("compiled", 1), ("fused", 4)):
            path = study(tmp_path, f"throughput-{name}", args, gpu, compile_=name != "packed", fuse=fuse)
            assert load_study(path).trials


def test_quickstart_is_sized_for_a_cpu():
    study = load_study(ROOT / "studies" / "quickstart.yaml")
    assert study.spec.resources.gpu == 0 and all(t.config.data.name == "digits" for t in study.trials)
    assert len({t.arm for t in study.trials}) == 2 and len(study.spec.seeds) == 2


def test_a_corrupt_cifar_folder_exits_2_with_nothing_created(tmp_path, capsys):
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, _ in CIFAR10.train_list + CIFAR10.test_list:
        (folder / name).write_bytes(b"truncated download")
    err = _refused(
        tmp_path, capsys, _good(tmp_path, data={"name": "cifar10", "path": str(tmp_path / "data"), "image_size": 16})
    )
    assert "data_batch_1 is missing or fails its md5 check" in err
