"""Efficiency metrics on curves whose answers are known."""

import math

import numpy as np
import pytest

from ablations.report.formulas import (
    as_curve,
    auc,
    bootstrap_band,
    budget_to_target,
    epoch_reduction,
    epochs_to_target,
    mean_ci,
    rauc,
    speedup,
)

LINEAR = as_curve([0, 10, 20], [0.0, 0.5, 1.0])


def test_auc_of_a_linear_curve_is_its_midpoint_value():
    assert auc(LINEAR) == pytest.approx(0.5)
    assert auc(as_curve([1, 2, 3, 4], [0.2, 0.4, 0.6, 0.8])) == pytest.approx(0.5)


def test_auc_over_a_sub_range_interpolates_its_bounds():
    assert auc(LINEAR, 5, 15) == pytest.approx(0.5)
    assert auc(LINEAR, 10, 20) == pytest.approx(0.75)


def test_auc_of_a_single_point_is_its_value():
    assert auc(as_curve([30], [0.7])) == pytest.approx(0.7)


def test_identical_curves_give_rauc_one_and_a_better_curve_more():
    assert rauc(LINEAR, LINEAR) == pytest.approx(1.0)
    higher = as_curve([0, 10, 20], [0.2, 0.7, 1.0])
    assert rauc(higher, LINEAR) > 1.0
    assert rauc(as_curve([0, 10, 20, 30], [0.0, 0.5, 1.0, 0.0]), LINEAR) == pytest.approx(1.0)  # common epochs only


def test_epochs_to_target_exactly_at_an_evaluation_point():
    assert epochs_to_target(LINEAR, 0.5) == pytest.approx(10.0)


def test_epochs_to_target_interpolates_between_evaluation_points():
    assert epochs_to_target(LINEAR, 0.75) == pytest.approx(15.0)
    assert epochs_to_target(as_curve([5, 10], [0.4, 0.6]), 0.45) == pytest.approx(6.25)


def test_first_crossing_counts_even_if_the_curve_falls_again():
    assert epochs_to_target(as_curve([1, 2, 3, 4], [0.1, 0.9, 0.2, 0.95]), 0.9) == pytest.approx(2.0)


def test_a_curve_that_never_reaches_the_target_is_censored():
    assert epochs_to_target(LINEAR, 1.01) is None
    assert speedup(10.0, None) is None and epoch_reduction(None, 5.0) is None


def test_speedup_and_epoch_reduction():
    assert speedup(800, 400) == pytest.approx(2.0)
    assert epoch_reduction(800, 400) == pytest.approx(0.5)


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_agreement():
    wide = mean_ci([0.60, 0.70, 0.65, 0.75, 0.62])
    narrow = mean_ci([0.650, 0.652, 0.651, 0.649, 0.648])
    assert wide.low < wide.mean < wide.high and wide.n == 5
    assert (narrow.high - narrow.low) < (wide.high - wide.low) / 10
    assert mean_ci([0.7, 0.7, 0.7]) == mean_ci([0.7, 0.7, 0.7]) and mean_ci([0.7, 0.7, 0.7]).low == pytest.approx(0.7)


def test_one_seed_has_no_interval_and_missing_values_are_dropped():
    one = mean_ci([0.5, None, math.nan])
    assert one.mean == 0.5 and one.n == 1 and math.isnan(one.low)
    assert mean_ci([]).n == 0


def test_fewer_than_three_seeds_give_no_interval():
    two = mean_ci([0.5, 0.7])
    assert two.mean == pytest.approx(0.6) and two.n == 2 and not two.has_interval
    mean, lo, hi = bootstrap_band(np.array([[1.0, 2.0], [3.0, 2.0]]))
    assert mean.tolist() == [2.0, 2.0] and np.isnan(lo).all() and np.isnan(hi).all()


def test_tables_and_figure_bands_use_one_interval_method():
    values = np.array([[0.60, 0.10], [0.70, 0.20], [0.65, 0.15], [0.75, 0.30]])
    mean, lo, hi = bootstrap_band(values)
    for j in range(values.shape[1]):
        iv = mean_ci(values[:, j].tolist())
        assert (iv.mean, iv.low, iv.high) == pytest.approx((mean[j], lo[j], hi[j]))
        assert iv.low <= iv.mean <= iv.high


def test_budget_to_target_interpolates_between_separately_scheduled_budgets():
    # finals of runs scheduled for 25, 50, 75, 100 epochs; target 0.62 lies between 50 (0.60) and 75 (0.64)
    assert budget_to_target([25, 50, 75, 100], [0.50, 0.60, 0.64, 0.66], 0.62) == pytest.approx(62.5)
    assert budget_to_target([100, 25, 50, 75], [0.66, 0.50, 0.60, 0.64], 0.66) == pytest.approx(100.0)  # any order


def test_budget_to_target_starts_from_the_untrained_model_and_censors():
    # already above target at the smallest budget: interpolated from budget 0 (the epoch-0 value)
    assert budget_to_target([25, 50], [0.70, 0.80], 0.60, start=0.10) == pytest.approx(25 * 0.5 / 0.6)
    assert budget_to_target([25, 50], [0.70, 0.80], 0.60) == pytest.approx(25.0)
    assert budget_to_target([25, 50, 100], [0.50, 0.55, 0.58], 0.60, start=0.1) is None
