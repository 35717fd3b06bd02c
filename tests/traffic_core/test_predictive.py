"""Per-regime predictive distributions: class probabilities, Mondrian intervals, their JSON
form, and the scores the bench reports them with."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from traffic_core.evaluation.probabilistic import (
    brier_score,
    coverage_by_class,
    one_hot,
    reliability_table,
)
from traffic_core.models.mondrian import fit_regimes
from traffic_core.predictive import QUANTILE_LEVELS, RegimeDistribution, class_probabilities
from traffic_core.windows import DEFAULT_THRESHOLDS, CongestionThresholds

SETTINGS = settings(max_examples=150, derandomize=True, database=None, deadline=None)
mph = st.floats(-200.0, 200.0, allow_nan=False)


@st.composite
def residual_quantiles(draw: st.DrawFn) -> np.ndarray:
    """Stored quantiles as `fit_regimes` writes them, ties and single values included."""
    residuals = draw(hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-60, 60)))
    return np.round(np.quantile(residuals, QUANTILE_LEVELS), 3)


@st.composite
def thresholds(draw: st.DrawFn) -> CongestionThresholds:
    severe = draw(st.floats(1.0, 80.0))
    return CongestionThresholds(severe, severe + draw(st.floats(0.5, 40.0)))


@SETTINGS
@given(
    quantiles=residual_quantiles(),
    points=hnp.arrays(np.float64, 20, elements=mph | st.just(np.nan)),
    limits=thresholds(),
)
def test_probabilities_are_a_distribution_over_the_classes(
    quantiles: np.ndarray, points: np.ndarray, limits: CongestionThresholds
) -> None:
    p = class_probabilities(points, quantiles, limits)
    known = ~np.isnan(points)
    assert np.isnan(p[~known]).all()
    assert ((p[known] >= 0.0) & (p[known] <= 1.0)).all()
    np.testing.assert_allclose(p[known].sum(axis=1), 1.0, atol=1e-12)


@SETTINGS
@given(quantiles=residual_quantiles(), low=mph, step=st.floats(0.0, 100.0), limits=thresholds())
def test_a_faster_forecast_never_makes_congestion_likelier(
    quantiles: np.ndarray, low: float, step: float, limits: CongestionThresholds
) -> None:
    slow, fast = class_probabilities(np.array([low, low + step]), quantiles, limits)
    assert fast[0] <= slow[0] + 1e-12  # severe
    assert fast[0] + fast[1] <= slow[0] + slow[1] + 1e-12  # severe or congested
    assert fast[2] >= slow[2] - 1e-12  # free flow


@SETTINGS
@given(quantiles=residual_quantiles(), limits=thresholds())
def test_far_from_the_thresholds_the_class_is_sure(
    quantiles: np.ndarray, limits: CongestionThresholds
) -> None:
    """No residual seen reaches a threshold from 200 mph beyond it: certainty, as the data say."""
    p = class_probabilities(
        np.array([limits.severe_below - 200.0, limits.free_flow_from + 200.0]), quantiles, limits
    )
    np.testing.assert_array_equal(p, [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def test_probabilities_follow_the_residual_distribution() -> None:
    """Residuals uniform on [-10, 10]: a 40 mph forecast is severe with chance 0.25."""
    quantiles = np.quantile(np.linspace(-10, 10, 100_001), QUANTILE_LEVELS)
    p = class_probabilities(np.array([40.0, 55.0]), quantiles)
    np.testing.assert_allclose(p, [[0.25, 0.75, 0.0], [0.0, 0.75, 0.25]], atol=1e-4)


def regime_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Observed speeds of the three regimes; errors three times wider in congestion."""
    observed = rng.choice([25.0, 45.0, 65.0], size=n, p=[0.1, 0.2, 0.7])
    scale = np.where(observed < 60.0, 6.0, 2.0)
    return observed, rng.normal(0.0, 1.0, n) * scale


def test_mondrian_holds_coverage_in_each_regime_where_one_width_does_not() -> None:
    rng = np.random.default_rng(7)
    observed, residuals = regime_data(rng, 20_000)
    fitted = fit_regimes(residuals, observed, coverage=0.9)
    assert set(fitted.regime_half_widths) == {"severe", "congested", "free_flow"}
    fresh_observed, fresh_errors = regime_data(rng, 20_000)
    regimes = DEFAULT_THRESHOLDS.classify(fresh_observed)
    zeros = np.zeros(len(fresh_errors))
    for widths, holds in ((fitted.half_widths(fresh_observed), True), (fitted.half_width, False)):
        q = np.broadcast_to(widths, zeros.shape)
        by_regime = coverage_by_class(regimes, fresh_errors, zeros - q, zeros + q)
        within = [abs(v["coverage"] - 0.9) <= 0.02 for v in by_regime.values()]
        assert all(within) == holds, by_regime


def test_a_rare_regime_and_an_unknown_one_use_the_marginal_calibration() -> None:
    rng = np.random.default_rng(3)
    observed = np.r_[np.full(1_000, 65.0), np.full(20, 25.0)]
    fitted = fit_regimes(rng.normal(size=1_020), observed, coverage=0.9, min_rows=200)
    assert set(fitted.regime_half_widths) == {"free_flow"}
    widths = fitted.half_widths(np.array([25.0, np.nan, 65.0]))
    assert widths[0] == widths[1] == fitted.half_width != widths[2]


def test_the_json_form_round_trips() -> None:
    rng = np.random.default_rng(11)
    observed, residuals = regime_data(rng, 5_000)
    fitted = fit_regimes(residuals, observed, coverage=0.8, thresholds=CongestionThresholds(30, 55))
    loaded = RegimeDistribution.from_json(
        fitted.half_width, json.loads(json.dumps(fitted.to_json()))
    )
    assert loaded.thresholds == CongestionThresholds(30, 55)
    assert loaded.regime_half_widths == fitted.regime_half_widths
    speeds, points = rng.choice([25.0, 45.0, 65.0, np.nan], 300), rng.uniform(10, 80, 300)
    np.testing.assert_array_equal(loaded.half_widths(speeds), fitted.half_widths(speeds))
    np.testing.assert_allclose(
        loaded.probabilities(points, speeds), fitted.probabilities(points, speeds), atol=2e-3
    )
    assert loaded.to_json() == fitted.to_json()


def test_brier_score_and_reliability() -> None:
    outcomes = np.array(["severe", "free_flow", "free_flow", "congested"], dtype=object)
    assert brier_score(one_hot(outcomes), outcomes) == 0.0
    wrong = one_hot(np.array(["free_flow", "severe", "severe", "free_flow"], dtype=object))
    assert brier_score(wrong, outcomes) == 2.0
    assert brier_score(np.full((4, 3), 1 / 3), outcomes) == pytest.approx(2 / 3)
    table = reliability_table(np.tile([0.05, 0.25, 0.7], (4, 1)), outcomes, bins=10)
    free = table[table["class"] == "free_flow"].iloc[0]
    assert (free["bin"], free["forecasts"], free["observed_rate"]) == (7, 4, 0.5)
    assert table["forecasts"].sum() == 12
