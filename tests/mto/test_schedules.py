import math

import pytest

from mto.config import ConfigError
from mto.config.depth import layer_weights
from mto.objective.schedules import lambda_factor, learning_rate


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ("all", [1, 1, 1, 1, 1]),
        ("none", [0, 0, 0, 0, 0]),
        ("early:2", [1, 1, 0, 0, 0]),
        ("linear", [1, 0.75, 0.5, 0.25, 0]),
        ("exp:0.5", [1, 0.5, 0.25, 0.125, 0.0625]),
        ([0, 3], [1, 0, 0, 1, 0]),
        ([0.5, 0.5, 0.0, 0.0, 2.0], [0.5, 0.5, 0, 0, 2.0]),
    ],
)
def test_layer_weights(schedule, expected):
    assert layer_weights(schedule, 4) == pytest.approx(expected)


@pytest.mark.parametrize("schedule", ["early", "early:0", "exp:-1", "deep", "linear:3", [], [7], [0.5, 1.0], [-1]])
def test_bad_layer_schedules_are_refused(schedule):
    with pytest.raises(ConfigError):
        layer_weights(schedule, 4)


def test_lambda_schedules():
    assert lambda_factor("constant", 3, 10) == 1.0
    assert lambda_factor("linear_warmup", 1, 10, warmup_epochs=4) == 0.25
    assert lambda_factor("linear_warmup", 8, 10, warmup_epochs=4) == 1.0
    assert lambda_factor("cosine_decay", 0, 10) == 1.0
    assert lambda_factor("cosine_decay", 5, 10) == pytest.approx(0.5)
    assert lambda_factor("cosine_decay", 10, 10) == pytest.approx(0.0)


def test_learning_rate_warms_up_then_decays_to_floor():
    lrs = [learning_rate(s, 100, 10, 1.0, 0.01) for s in range(100)]
    assert lrs[9] == pytest.approx(1.0) and lrs[0] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert learning_rate(100, 100, 10, 1.0, 0.01) == pytest.approx(0.01)
    assert lrs[55] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
