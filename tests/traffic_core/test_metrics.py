"""DCRNN-protocol scores, congestion scores, and the persistence / historical-average baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from traffic_core import metrics as m
from traffic_core.features import fit_profile, make_targets
from traffic_core.windows import CongestionThresholds

TRUTH = np.array([50.0, 0.0, np.nan, 20.0, 70.0])
PRED = np.array([55.0, 99.0, 99.0, 10.0, np.nan])


def test_zero_and_nan_truth_are_ignored_and_rmse_is_pooled() -> None:
    truth, pred = TRUTH[:4], PRED[:4]
    assert m.masked_mae(truth, pred) == pytest.approx((5 + 10) / 2)
    assert m.masked_rmse(truth, pred) == pytest.approx(np.sqrt((25 + 100) / 2))
    assert m.masked_mape(truth, pred) == pytest.approx((5 / 50 + 10 / 20) / 2 * 100)


def test_a_missing_forecast_where_truth_exists_is_an_error() -> None:
    with pytest.raises(ValueError, match="1 forecasts are NaN"):
        m.masked_mae(TRUTH, PRED)
    with pytest.raises(ValueError, match="no valid ground truth"):
        m.masked_rmse(np.array([0.0, np.nan]), np.array([1.0, 2.0]))


def test_congestion_scores_use_the_three_classes() -> None:
    truth = np.array([20.0, 40.0, 65.0, 70.0, 0.0])
    pred = np.array([30.0, 62.0, 61.0, 50.0, 10.0])
    scores = m.congestion_scores(truth, pred)
    # F1 = 2tp / (2tp + fp + fn): severe 2/2, congested 0/2, free flow 2/4
    assert scores["accuracy"] == pytest.approx(2 / 4)
    assert scores["macro_f1"] == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    lenient = m.congestion_scores(truth, pred, CongestionThresholds(35.0, 45.0))
    assert lenient["accuracy"] == pytest.approx(3 / 4)


def test_a_class_absent_from_truth_and_forecast_is_left_out_of_macro_f1() -> None:
    truth, pred = np.array([65.0, 70.0, 40.0]), np.array([66.0, 50.0, 45.0])
    assert m.congestion_scores(truth, pred)["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)


@pytest.fixture
def speeds() -> pd.DataFrame:
    index = pd.date_range("2012-03-01", periods=8 * 288, freq="5min", name="timestamp")
    rng = np.random.default_rng(0)
    values = (
        55 + 10 * np.sin(np.arange(len(index)) / 40)[:, None] + rng.normal(0, 1, (len(index), 2))
    )
    return pd.DataFrame(values, index=index, columns=["a", "b"])


def test_persistence_carries_the_last_reading_for_at_most_an_hour(speeds: pd.DataFrame) -> None:
    holey = speeds.copy()
    holey.iloc[100:120, 0] = np.nan
    forecast = m.persistence_forecast(holey).set_index(["timestamp", "sensor_id"])
    last = holey.iloc[99, 0]
    for step, expected in [(100, last), (110, last), (111, np.nan), (120, holey.iloc[120, 0])]:
        got = forecast.loc[(holey.index[step], "a")]
        np.testing.assert_array_equal(got.to_numpy(), np.full(3, expected))


def test_historical_average_reads_the_profile_at_the_target_time(speeds: pd.DataFrame) -> None:
    profile = fit_profile(speeds.iloc[: 7 * 288])
    forecast = m.historical_average_forecast(speeds, profile).set_index(["timestamp", "sensor_id"])
    at = pd.Timestamp("2012-03-08 07:00")  # the eighth day, a Thursday like the first
    got = forecast.loc[(at, "b")]
    assert got["target_15min"] == speeds.loc["2012-03-01 07:15", "b"]
    assert got["target_60min"] == speeds.loc["2012-03-01 08:00", "b"]


def test_evaluate_horizons_gives_one_tidy_row_per_horizon_and_model(
    speeds: pd.DataFrame,
) -> None:
    train, test = speeds.iloc[: 7 * 288], speeds
    targets = make_targets(test)
    forecasts = {
        "persistence": m.persistence_forecast(test),
        "historical_average": m.historical_average_forecast(test, fit_profile(train)),
    }
    frame = m.forecast_frame(targets, forecasts)
    frame = frame[(frame["timestamp"] >= "2012-03-08") & frame["y_true"].notna()]
    table = m.evaluate_horizons(frame)
    assert list(table.columns) == ["horizon", "model", *m.SCORE_COLUMNS]
    assert list(zip(table["horizon"], table["model"], strict=True)) == [
        (h, model) for h in (15, 30, 60) for model in ("historical_average", "persistence")
    ]
    one = frame[(frame["horizon"] == 30) & (frame["model"] == "persistence")]
    row = table[(table["horizon"] == 30) & (table["model"] == "persistence")].iloc[0]
    assert row["mae"] == m.masked_mae(one["y_true"], one["y_pred"])
    assert row["n"] == 288 * 2 - 2 * 6  # the last 30 minutes have no target
    nested = m.metrics_by_horizon(table)
    assert nested["30"]["persistence"]["mae"] == row["mae"]
    assert set(nested["60"]["historical_average"]) == set(m.SCORE_COLUMNS)


def test_forecasts_must_be_row_aligned_with_the_targets(speeds: pd.DataFrame) -> None:
    targets = make_targets(speeds)
    shuffled = m.persistence_forecast(speeds).iloc[::-1].reset_index(drop=True)
    with pytest.raises(ValueError, match="not row-aligned"):
        m.forecast_frame(targets, {"persistence": shuffled})
