"""Model selection by forward-chaining CV, conformal intervals, and a small real end-to-end."""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import LinAlgWarning
from sklearn.base import BaseEstimator, RegressorMixin
from xgboost import XGBRegressor

from traffic_core import features as f
from traffic_core.cv import forward_chaining_splits
from traffic_core.datasets import load_metr_la_graph, load_speed_csv
from traffic_core.metrics import masked_mae, persistence_forecast
from traffic_core.models import (
    ConformalInterval,
    Family,
    TrainedModel,
    coverage,
    crossfit_features,
    select_best,
    to_onnx,
    train_horizon,
)
from traffic_core.models.candidates import build_ridge
from traffic_core.models.export import onnx_predict
from traffic_core.models.residual import ResidualRegressor
from traffic_core.windows import WINDOW

SIX_DAYS = "metr-la/los_loop_speed_2012-03-01_to_03-06.csv"
GAP = max(f.HORIZONS.values())


class Constant(RegressorMixin, BaseEstimator):
    """Predicts `value`; logs the step numbers (column 0) of every fit's rows."""

    def __init__(self, value: float = 0.0, log: list[np.ndarray] | None = None) -> None:
        self.value = value
        self.log = log

    def fit(self, X: np.ndarray, y: np.ndarray) -> Constant:
        assert self.log is not None
        self.log.append(X[:, 0].copy())
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), self.value)


@pytest.fixture
def long_rows() -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """Two days x 4 sensors in the long layout; column 0 is the step number, 10 % of
    targets are missing."""
    steps = np.repeat(np.arange(2 * 288), 4)
    stamps = pd.Series(pd.Timestamp("2012-03-01") + steps * WINDOW)
    rng = np.random.default_rng(1)
    y = 55.0 + rng.normal(0, 5, len(steps))
    y[rng.random(len(y)) < 0.1] = np.nan
    X = np.column_stack([steps, rng.normal(size=len(steps))]).astype("float32")
    return X, y, stamps


def test_cv_picks_lowest_masked_mae(long_rows: tuple[np.ndarray, np.ndarray, pd.Series]) -> None:
    X, y, stamps = long_rows
    log: list[np.ndarray] = []
    family = Family("constant", partial(Constant, log=log), ())
    grid = [{"value": 40.0}, {"value": 54.0}, {"value": 70.0}]
    model = train_horizon(X, y, stamps, family, grid, n_splits=4, gap_steps=GAP)
    assert model.params == {"value": 54.0}
    valid = ~np.isnan(y)
    folds = forward_chaining_splits(stamps[valid], n_splits=4, gap_steps=GAP)
    val_truth = np.concatenate([y[valid][val] for _, val in folds])
    for result in model.cv_results:
        expected = masked_mae(val_truth, np.full(len(val_truth), result["params"]["value"]))
        assert result["cv_mae"] == pytest.approx(expected)
    assert model.cv_mae == min(r["cv_mae"] for r in model.cv_results)
    np.testing.assert_allclose(model.residuals, val_truth - 54.0)


def test_folds_never_train_at_or_after_validation_start_minus_gap(
    long_rows: tuple[np.ndarray, np.ndarray, pd.Series],
) -> None:
    X, y, stamps = long_rows
    log: list[np.ndarray] = []
    family = Family("constant", partial(Constant, log=log), ({"value": 55.0},))
    model = train_horizon(X, y, stamps, family, n_splits=5, gap_steps=GAP)
    valid = ~np.isnan(y)
    folds = forward_chaining_splits(stamps[valid], n_splits=5, gap_steps=GAP)
    assert len(log) == len(folds) + 1  # one fit per fold, then the refit
    for seen, (_, val) in zip(log, folds, strict=False):
        val_start = X[valid][val[0], 0]
        assert seen.max() < val_start - GAP
        expected_rows = np.count_nonzero(X[valid][:, 0] < val_start - GAP)
        assert len(seen) == expected_rows  # every earlier row with a target, nothing more
    assert len(log[-1]) == valid.sum() == model.n_train_rows


def test_max_rows_samples_with_a_fixed_seed(
    long_rows: tuple[np.ndarray, np.ndarray, pd.Series],
) -> None:
    X, y, stamps = long_rows
    logs: list[list[np.ndarray]] = [[], []]
    for log in logs:
        family = Family("constant", partial(Constant, log=log), ({"value": 55.0},))
        train_horizon(X, y, stamps, family, n_splits=3, max_rows=600, seed=3)
    assert len(logs[0][-1]) == 600
    np.testing.assert_array_equal(logs[0][-1], logs[1][-1])
    assert (np.diff(logs[0][-1]) >= 0).all()  # sampling keeps time order


def test_unordered_rows_are_refused(long_rows: tuple[np.ndarray, np.ndarray, pd.Series]) -> None:
    X, y, stamps = long_rows
    family = Family("constant", partial(Constant, log=[]), ({"value": 55.0},))
    with pytest.raises(ValueError, match="ordered"):
        train_horizon(X[::-1], y[::-1], stamps[::-1], family)


def _trained(family: str, cv_mae: float, rows: int = 10) -> TrainedModel:
    return TrainedModel(family, {}, Constant(), cv_mae, [], np.zeros(rows), rows, 0.0)


def test_select_best_per_horizon() -> None:
    chosen = select_best(
        {
            15: [_trained("ridge", 2.0), _trained("xgboost", 1.5)],
            60: [_trained("ridge", 3.0), _trained("xgboost", 3.5)],
        }
    )
    assert {h: m.family for h, m in chosen.items()} == {15: "xgboost", 60: "ridge"}
    with pytest.raises(ValueError, match="different rows"):
        select_best({15: [_trained("ridge", 2.0, rows=10), _trained("xgboost", 1.0, rows=9)]})


def test_residual_regressor_adds_the_first_present_base_in_python_and_onnx() -> None:
    """Learns the change from column 0, falling back to column 1, then 0 mph."""
    rng = np.random.default_rng(4)
    X = rng.uniform(20, 70, (400, 3)).astype("float32")
    X[::7, 0] = np.nan
    X[::21, 1] = np.nan
    model = ResidualRegressor(Constant(-2.0, log=[]), (0, 1)).fit(X, X[:, 2])
    base = np.where(np.isnan(X[:, 0]), X[:, 1], X[:, 0])
    expected = np.nan_to_num(base, nan=0.0) - 2.0
    np.testing.assert_allclose(model.predict(X), expected)
    assert np.isnan(base).any()
    booster = ResidualRegressor(XGBRegressor(n_estimators=5, max_depth=2), (0, 1)).fit(X, X[:, 2])
    onnx = onnx_predict(to_onnx(booster, X.shape[1]), X)
    assert np.abs(onnx - booster.predict(X)).max() <= 1e-3


@pytest.mark.parametrize("nominal", [0.8, 0.9, 0.95])
def test_conformal_coverage_near_nominal(nominal: float) -> None:
    rng = np.random.default_rng(2)
    errors = rng.standard_t(df=4, size=25_000) * 3.0  # heavy-tailed, like traffic errors
    calibration, test = errors[:5_000], errors[5_000:]
    interval = ConformalInterval.fit(calibration, coverage=nominal)
    forecast = rng.uniform(20, 70, len(test))
    lo, hi = interval.bounds(forecast)
    assert coverage(forecast + test, lo, hi) == pytest.approx(nominal, abs=0.02)
    assert interval.n_calibration == 5_000


def test_conformal_ignores_missing() -> None:
    interval = ConformalInterval.fit(np.array([1.0, np.nan, 2.0, 3.0]), coverage=0.5)
    assert interval.n_calibration == 3
    assert interval.q == 2.0
    assert coverage(np.array([np.nan, 0.0, 5.0]), np.array([0, 0, 4.0]), np.array([1, 1, 6.0])) == 1
    with pytest.raises(ValueError):
        ConformalInterval.fit(np.array([np.nan]))


def test_end_to_end_beats_persistence_at_60_minutes(shared_data: Path) -> None:
    """30 real sensors, two days: train up to Friday noon, score targets of Friday afternoon."""
    speeds = load_speed_csv(shared_data / SIX_DAYS).loc[:"2012-03-02 23:55"]
    graph = load_metr_la_graph(shared_data / "metr-la")
    graph = graph.subgraph(list(graph.sensor_ids[:30]))
    train_end = pd.Timestamp("2012-03-02 11:55")
    train_speeds = speeds.loc[:train_end]
    context = f.FeatureContext.from_graph(graph, f.fit_profile(train_speeds))
    ids = context.sensor_ids
    train_frame = crossfit_features(train_speeds, context)
    targets = f.make_targets(train_speeds, sensor_ids=ids)
    column = f.target_column(f.HORIZONS[60])
    grid: list[dict[str, Any]] = [{"n_estimators": 80, "max_depth": 4}]
    model = train_horizon(
        train_frame[list(f.FEATURE_NAMES)].to_numpy(),
        targets[column].to_numpy(),
        targets["timestamp"],
        "xgboost",
        grid,
        n_splits=3,
    )
    test_frame = f.make_features(speeds, context)
    truth = f.make_targets(speeds, sensor_ids=ids)[column].to_numpy()
    last = persistence_forecast(speeds, sensor_ids=ids)[column].to_numpy()
    forecast = model.predict(test_frame[list(f.FEATURE_NAMES)])
    target_time = test_frame["timestamp"] + f.HORIZONS[60] * WINDOW
    scored = (target_time > train_end).to_numpy() & ~np.isnan(truth) & ~np.isnan(last)
    assert scored.sum() > 3_000
    ours, persistence = (
        masked_mae(truth[scored], forecast[scored]),
        masked_mae(truth[scored], last[scored]),
    )
    assert ours < 0.95 * persistence


def test_ridge_solves_collinear_float32_features_without_warnings() -> None:
    """Columns that repeat each other (as lags and rolling means do on a flat stretch): the
    float32 normal equations are singular but for alpha, which Cholesky reports as a
    LinAlgWarning on every fit at alpha 0.1."""
    rng = np.random.default_rng(0)
    base = rng.normal(60, 10, (50_000, 1))
    X = np.repeat(base, 12, axis=1).astype("float32")
    y = base[:, 0] + rng.normal(0, 1, len(base))
    with warnings.catch_warnings():
        warnings.simplefilter("error", LinAlgWarning)
        model = build_ridge(alpha=0.1).fit(X, y)
    assert masked_mae(y, model.predict(X)) < 1.0
