"""The pace of a trial's shape, measured on this machine: every part timed, evaluations only where a probe is on,
fine-tuning only where it is on."""

from dataclasses import replace

from mto.config import DataConfig, EvalConfig, ModelConfig, TrainConfig, TrialConfig
from mto.config.finetune import FinetuneConfig
from mto.training.pace import measure_pace

TINY = TrialConfig(
    data=DataConfig(max_train=256),
    model=ModelConfig(embed_dim=32, depth=2, num_heads=2),
    train=TrainConfig(batch_size=32),
    eval=EvalConfig(hetero_batch=8, probe_steps=5, knn=False),
)


def test_every_part_of_a_trial_is_timed():
    pace = measure_pace(TINY, steps=2)
    assert set(pace) == {"start_s", "settling_s", "step_s", "eval_s_per_image", "profile_s", "finetune_s_per_image"}
    assert pace["step_s"] > 0 and pace["eval_s_per_image"] > 0 and pace["profile_s"] > 0
    assert pace["settling_s"] >= 0 and pace["finetune_s_per_image"] == 0  # eager on a CPU: nothing to settle


def test_no_probe_no_evaluation_and_fine_tuning_when_on():
    tuned = FinetuneConfig(enabled=True, epochs=3, batch_size=32)
    pace = measure_pace(replace(TINY, eval=EvalConfig(hetero_batch=8, linear=False, knn=False, finetune=tuned)), 2)
    assert pace["eval_s_per_image"] == 0 and pace["finetune_s_per_image"] > 0
