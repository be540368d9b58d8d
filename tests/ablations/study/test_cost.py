"""A study's work and the wall time of its trials, from paces (pure: no trial runs here)."""

from dataclasses import replace

import pytest

from ablations.study import load_study, with_threads
from ablations.study.cost import makespan, shape, slots, study_seconds, study_work, trial_seconds
from tests.ablations.conftest import ROOT


def test_the_quickstart_work_is_counted_from_its_settings():
    study = load_study(ROOT / "studies" / "quickstart.yaml")
    work = study_work(study)
    assert [w.name for w in work.trials] == [t.name for t in study.trials] and not work.unknown and not work.samples
    cfg = study.trials[0].config
    train = 1437 - round(1437 * cfg.data.val_fraction)  # digits' training split less the validation split
    steps = cfg.train.epochs * (train // cfg.train.batch_size)
    w = work.trials[0]
    assert w.steps == steps and w.train_images == steps * cfg.train.batch_size
    assert w.evaluations == 1 + cfg.train.epochs // cfg.eval.every  # epoch 0 and every eval.every epochs
    assert w.eval_images == train + 360 + round(1437 * cfg.data.val_fraction)  # probe set, test, validation
    assert w.profiles == cfg.train.epochs + 1 and w.finetune_epochs == 0
    assert work.total("train_images") == 4 * w.train_images


def test_a_shape_is_what_sets_the_pace():
    study = load_study(ROOT / "studies" / "quickstart.yaml")
    by_arm = {}
    for t in study.trials:
        by_arm.setdefault(t.arm, set()).add(shape(t.config))
    assert all(len(s) == 1 for s in by_arm.values())  # seeds share a pace
    assert by_arm["simmim"] != by_arm["simmim+mto"]  # MTO's losses add work
    cfg = next(t.config for t in study.trials if t.arm == "simmim+mto")
    assert shape(cfg) == shape(replace(cfg, mto=replace(cfg.mto, lambda_e=0.3)))  # another weight, the same work
    assert shape(cfg) != shape(replace(cfg, mto=replace(cfg.mto, lambda_e=0.0)))  # a loss off: less work
    assert shape(cfg) != shape(with_threads(cfg, 2)) != shape(with_threads(cfg, 1))


def test_the_longest_trials_go_first_on_the_first_free_slot():
    assert makespan([3, 3, 2, 2, 2], 2) == 7  # 3+2+2 and 3+2: greedy, not the best packing (6)
    assert makespan([5, 1, 1], 1) == 7 and makespan([5, 1, 1], 8) == 5 and makespan([], 2) == 0


def test_slots_are_the_fewest_the_concurrency_cpus_and_gpus_allow(tmp_path):
    study = load_study(ROOT / "studies" / "quickstart.yaml")  # 4 trials, max_concurrent 2, 1 CPU each
    assert slots(study, cpus=8, gpus=0) == 2 and slots(study, cpus=1, gpus=0) == 1
    gpu = load_study(
        ROOT / "studies" / "quickstart.yaml", ["resources.gpu=0.25", "max_concurrent=null"], check_paths=False
    )
    assert slots(gpu, cpus=64, gpus=0.5) == 2 and slots(gpu, cpus=64, gpus=8) == 4  # 4 trials in all


def test_the_study_seconds_are_its_trials_paces_times_their_work_scheduled():
    study = load_study(ROOT / "studies" / "quickstart.yaml")
    work = study_work(study)
    pace = {
        "start_s": 2.0,
        "settling_s": 1.0,
        "step_s": 0.01,
        "eval_s_per_image": 1e-4,
        "profile_s": 0.05,
        "finetune_s_per_image": 0.0,
    }
    w = work.trials[0]
    one = 2.0 + 1.0 + w.steps * 0.01 + w.evaluations * w.eval_images * 1e-4 + w.profiles * 0.05
    assert trial_seconds(w, pace) == pytest.approx(one)
    paces = {s: pace for s in work.shapes}
    assert study_seconds(study, work, paces, cpus=2, gpus=0) == pytest.approx(2 * one)  # 4 trials, 2 at a time
    assert study_seconds(study, work, {}, cpus=2, gpus=0) is None  # no pace: no time


def test_an_optuna_search_counts_every_sample_at_full_length():
    study = load_study(ROOT / "studies" / "optuna_weights.yaml", check_paths=False)
    work = study_work(study)
    assert len(work.samples) == study.spec.search.num_samples * len(study.spec.search_seeds)
    assert all(s.epochs == study.trial(s.name).config.train.epochs for s in work.samples)
