import pytest

from mto.config import ConfigError, DataConfig, EvalConfig, MIMConfig, ModelConfig, MTOConfig, TrainConfig, TrialConfig
from mto.data.checks import check_data


@pytest.mark.parametrize(
    "build, field, value",
    [
        (lambda: MIMConfig(mask_ratio=1.0), "mim.mask_ratio", 1.0),
        (lambda: MIMConfig(mask_ratio=0), "mim.mask_ratio", 0),
        (lambda: MIMConfig(method="beit"), "mim.method", "beit"),
        (lambda: MTOConfig(layers_e="deep:3"), "mto.layers_e", "deep:3"),
        (lambda: MTOConfig(lambda_schedule="step"), "mto.lambda_schedule", "step"),
        (lambda: MTOConfig(lambda_spa=0.1), "mto.lambda_spa", 0.1),
        (lambda: TrialConfig(data=DataConfig(image_size=30), model=ModelConfig(patch_size=4)), "model.patch_size", 4),
        (lambda: TrialConfig(mim=MIMConfig(mask_patch_size=3)), "mim.mask_patch_size", 3),
        (lambda: TrialConfig(mim=MIMConfig(method="mae", mask_patch_size=4)), "mim.mask_patch_size", 4),
        (lambda: DataConfig(name="cifar10"), "data.path", None),
        (lambda: TrainConfig(device="tpu"), "train.device", "tpu"),
        (lambda: EvalConfig(every=0), "eval.every", 0),
        (
            lambda: TrialConfig(mto=MTOConfig(lambda_e=1, affinity="attention", layers_e="early:2")),
            "mto.affinity",
            "attention",
        ),
    ],
)
def test_invalid_values_name_field_value_and_what_is_allowed(build, field, value):
    with pytest.raises(ConfigError) as err:
        build()
    assert err.value.path == field and err.value.value == value
    assert str(err.value).startswith(f"{field}={value!r} is invalid: ")


def test_missing_data_folder_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="data.path"):
        check_data(DataConfig(name="cifar10", path=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match="cifar-10-batches-py"):
        check_data(DataConfig(name="cifar10", path=str(tmp_path)))
    with pytest.raises(ConfigError, match="train/ and val/"):
        check_data(DataConfig(name="imagefolder", path=str(tmp_path)))


def test_mto_stack_depth_is_encoder_for_simmim_and_decoder_for_mae():
    assert TrialConfig(model=ModelConfig(depth=5)).num_mto_layers == 5
    assert TrialConfig(mim=MIMConfig(method="mae", decoder_depth=3)).num_mto_layers == 3


def test_config_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(ConfigError("train.epochs", 0, "an integer >= 1")))
    assert (err.path, err.value, err.allowed) == ("train.epochs", 0, "an integer >= 1")
    assert str(err) == "train.epochs=0 is invalid: an integer >= 1"


def _counts():
    """(section path, section class, field) of every count a trial's settings hold: each integer field, and each
    list of integers, of every config dataclass."""
    from dataclasses import fields

    from mto.config import section

    def walk(cls, prefix):
        for f in fields(cls):
            sub = section(cls, f.name)
            if sub is not None:
                yield from walk(sub, f"{prefix}{f.name}.")
            elif "int" in str(f.type) and "bool" not in str(f.type):
                yield prefix, cls, f

    return list(walk(TrialConfig, ""))


@pytest.mark.parametrize("prefix, cls, f", _counts(), ids=lambda v: v if isinstance(v, str) else getattr(v, "name", ""))
def test_every_count_has_an_upper_bound_that_is_checked_and_said(prefix, cls, f):
    from dataclasses import replace

    from mto.methods import registry

    huge = 2**64  # above every bound, the seeds' 2^63 - 1 included
    value = [huge, huge] if "list" in str(f.type) else huge
    with pytest.raises(ConfigError) as err:
        if cls is MIMConfig:  # a method's own setting: set with its method
            section = MIMConfig(method=(registry.owners(f.name) or ["simmim"])[0], **{f.name: value})
        else:
            section = cls(**{f.name: value})
        if prefix == "eval.finetune.":
            replace(TrialConfig(), eval=replace(EvalConfig(), finetune=section))
        else:
            replace(TrialConfig(), **{prefix.rstrip("."): section})
    assert err.value.path == f"{prefix}{f.name}", err.value
    bound = (" to ", "at most", "2^63", ")")  # a number, or a bound by another field ([0, eval.finetune.epochs))
    assert any(word in err.value.allowed for word in bound), err.value.allowed
