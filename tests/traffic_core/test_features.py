"""The one feature function on the real six METR-LA days: batch = live, missing stays missing."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traffic_core import features as f
from traffic_core.datasets import SensorGraph, load_metr_la_graph, load_speed_csv

SIX_DAYS = "metr-la/los_loop_speed_2012-03-01_to_03-06.csv"
TRAIN_END = "2012-03-05 23:55"


@pytest.fixture(scope="module")
def speeds(shared_data: Path) -> pd.DataFrame:
    return load_speed_csv(shared_data / SIX_DAYS)


@pytest.fixture(scope="module")
def graph(shared_data: Path) -> SensorGraph:
    return load_metr_la_graph(shared_data / "metr-la")


@pytest.fixture(scope="module")
def context(speeds: pd.DataFrame, graph: SensorGraph) -> f.FeatureContext:
    return f.FeatureContext.from_graph(graph, f.fit_profile(speeds.loc[:TRAIN_END]))


@pytest.fixture(scope="module")
def holey(speeds: pd.DataFrame) -> pd.DataFrame:
    """The real days with readings knocked out: 5 % at random, one sensor silent for 90
    minutes, a 0 mph marker, and one 5-minute step absent from the frame altogether."""
    rng = np.random.default_rng(7)
    out = speeds.mask(rng.random(speeds.shape) < 0.05)
    out.loc["2012-03-03 16:00":"2012-03-03 17:25", "773869"] = np.nan
    out.loc["2012-03-04 09:00", "767541"] = 0.0
    return out.drop(pd.Timestamp("2012-03-05 12:00"))


@pytest.fixture(scope="module")
def batch(holey: pd.DataFrame, context: f.FeatureContext) -> pd.DataFrame:
    return f.make_features(holey, context)


def row(frame: pd.DataFrame, at: str, sensor: str) -> pd.Series:
    hit = frame[(frame["timestamp"] == pd.Timestamp(at)) & (frame["sensor_id"] == sensor)]
    assert len(hit) == 1
    return hit.iloc[0]


def test_layout_one_row_per_step_and_sensor(
    batch: pd.DataFrame, holey: pd.DataFrame, context: f.FeatureContext
) -> None:
    assert list(batch.columns) == ["timestamp", "sensor_id", *f.FEATURE_NAMES]
    assert len(f.FEATURE_NAMES) == len(set(f.FEATURE_NAMES))
    steps = pd.date_range(holey.index[0], holey.index[-1], freq="5min")
    assert len(batch) == len(steps) * len(context.sensor_ids) == 1728 * 207
    assert (batch["timestamp"].iloc[:207] == steps[0]).all()
    assert batch["sensor_id"].iloc[:207].tolist() == context.sensor_ids
    assert (batch[list(f.FEATURE_NAMES)].dtypes == "float64").all()


MOMENTS = [
    "2012-03-01 00:00",  # no history at all
    "2012-03-01 00:40",  # less than an hour of history
    "2012-03-03 16:30",  # inside a sensor's silent stretch
    "2012-03-03 17:30",  # just after it
    "2012-03-04 09:05",  # a 0 mph marker in the window
    "2012-03-05 12:00",  # a step absent from the frame
    "2012-03-05 12:55",
    "2012-03-06 07:45",
    "2012-03-06 23:55",  # the last step
]


@pytest.mark.parametrize("at", MOMENTS)
def test_live_equals_batch_exactly(
    at: str, batch: pd.DataFrame, holey: pd.DataFrame, context: f.FeatureContext
) -> None:
    moment = pd.Timestamp(at)
    last_hour = holey.loc[moment - pd.Timedelta("55min") : moment]  # all the API holds
    live = f.make_features(last_hour, context, at=moment)
    expected = batch[batch["timestamp"] == moment].reset_index(drop=True)
    assert len(live) == len(context.sensor_ids)
    pd.testing.assert_frame_equal(live[["timestamp", "sensor_id"]], expected.iloc[:, :2])
    np.testing.assert_array_equal(
        live[list(f.FEATURE_NAMES)].to_numpy(), expected[list(f.FEATURE_NAMES)].to_numpy()
    )


def test_missing_readings_stay_missing(batch: pd.DataFrame, holey: pd.DataFrame) -> None:
    silent = row(batch, "2012-03-03 16:30", "773869")
    assert np.isnan(silent[[f"speed_lag{k}" for k in range(7)]].astype(float)).all()
    assert np.isnan(
        silent[["diff_1", "mean_30min", "min_30min", "profile_deviation"]].astype(float)
    ).all()
    assert silent["missing_60min"] >= 7
    last = holey.loc["2012-03-03 15:35":"2012-03-03 15:55", "773869"].dropna()
    assert silent["mean_60min"] == pytest.approx(last.mean())

    zero = row(batch, "2012-03-04 09:00", "767541")
    assert np.isnan(zero["speed_lag0"]) and zero["missing_60min"] >= 1
    assert zero["min_60min"] > 0

    absent = batch[batch["timestamp"] == pd.Timestamp("2012-03-05 12:00")]
    assert absent["speed_lag0"].isna().all() and (absent["missing_60min"] >= 1).all()


def test_features_by_hand(
    speeds: pd.DataFrame, context: f.FeatureContext, graph: SensorGraph
) -> None:
    at, sensor = pd.Timestamp("2012-03-02 08:30"), "717447"  # a Friday rush hour
    got = row(f.make_features(speeds, context, at=at), str(at), sensor)
    hour = speeds.loc[at - pd.Timedelta("55min") : at, sensor].to_numpy("float64")[::-1]
    np.testing.assert_array_equal(got[[f"speed_lag{k}" for k in range(12)]].astype(float), hour)
    assert got["diff_3"] == hour[0] - hour[3]
    assert got["mean_30min"] == pytest.approx(hour[:6].mean())
    assert got["std_60min"] == pytest.approx(hour.std(ddof=1))
    assert got["min_60min"] == hour.min()
    assert got["missing_60min"] == 0
    assert got["tod_sin"] == pytest.approx(np.sin(2 * np.pi * 510 / 1440))
    assert got["dow_cos"] == pytest.approx(np.cos(2 * np.pi * 4 / 7))
    assert got["is_weekend"] == 0

    j = graph.index_of(sensor)
    ups = [graph.index_of(s) for s in graph.upstream(sensor)]
    weights = graph.adjacency[ups, j].astype("float64")
    for lag in (0, 3):
        values = speeds.loc[at - lag * pd.Timedelta("5min")].to_numpy("float64")[ups]
        assert got[f"upstream_mean_lag{lag}"] == pytest.approx(np.average(values, weights=weights))
    downs = [graph.index_of(s) for s in graph.downstream(sensor)]
    values = speeds.loc[at].to_numpy("float64")[downs]
    assert got["downstream_mean_lag0"] == pytest.approx(
        np.average(values, weights=graph.adjacency[j, downs])
    )

    slot = 4 * 288 + 102  # Friday 08:30
    assert got["profile_now"] == context.profile[sensor].iloc[slot]
    assert got["profile_60min"] == context.profile[sensor].iloc[slot + 12]
    assert got["profile_deviation"] == hour[0] - got["profile_now"]


def test_profile_learns_from_the_training_window_only(speeds: pd.DataFrame) -> None:
    train = speeds.loc[:TRAIN_END]
    profile = f.fit_profile(train)
    assert profile.shape == (2016, 207) and not profile.isna().any().any()
    sensor, at = "773869", "08:00"
    day = {d: float(train.loc[f"2012-03-0{d} {at}", sensor]) for d in range(1, 6)}
    slot = 96
    assert profile[sensor].iloc[3 * 288 + slot] == day[1]  # Thursday: its own day
    assert profile[sensor].iloc[5 * 288 + slot] == day[3]  # Saturday: its own day
    weekdays = np.mean([day[1], day[2], day[5]], dtype="float64")  # Thu, Fri, Mon
    assert profile[sensor].iloc[1 * 288 + slot] == pytest.approx(weekdays)  # unseen Tuesday


def test_targets_are_future_speeds(speeds: pd.DataFrame, holey: pd.DataFrame) -> None:
    targets = f.make_targets(holey)
    assert list(targets.columns) == [
        "timestamp",
        "sensor_id",
        "target_15min",
        "target_30min",
        "target_60min",
    ]
    got = row(targets, "2012-03-02 08:30", "717447")
    assert got["target_15min"] == holey.loc["2012-03-02 08:45", "717447"]
    assert got["target_60min"] == holey.loc["2012-03-02 09:30", "717447"]
    gap = row(targets, "2012-03-05 11:45", "717447")
    assert np.isnan(gap["target_15min"])  # 12:00 is absent: missing, never 0
    assert targets[targets["timestamp"] == holey.index[-1]].iloc[:, 2:].isna().all().all()
    assert (targets.iloc[:, 2:].dropna() > 0).all().all()


def test_context_round_trips_through_a_file(
    tmp_path: Path, speeds: pd.DataFrame, context: f.FeatureContext
) -> None:
    context.save(tmp_path / "context.npz")
    loaded = f.FeatureContext.load(tmp_path / "context.npz")
    window = speeds.loc["2012-03-06 07:00":"2012-03-06 08:00"]
    pd.testing.assert_frame_equal(
        f.make_features(window, loaded, at="2012-03-06 08:00"),
        f.make_features(window, context, at="2012-03-06 08:00"),
    )


def test_live_rejects_a_moment_off_the_grid_or_of_another_zone(
    speeds: pd.DataFrame, context: f.FeatureContext
) -> None:
    with pytest.raises(ValueError, match="5-minute"):
        f.make_features(speeds, context, at="2012-03-02 08:31")
    with pytest.raises(ValueError, match="zone"):
        f.make_features(speeds, context, at=pd.Timestamp("2012-03-02 08:30", tz="UTC"))


def test_live_reads_utc_aggregates_by_their_wall_clock(
    speeds: pd.DataFrame, context: f.FeatureContext
) -> None:
    """The lake carries METR-LA's local wall clock as UTC; features must not shift it."""
    at = pd.Timestamp("2012-03-02 08:30")
    naive = f.make_features(speeds, context, at=at)
    utc = f.make_features(speeds.tz_localize("UTC"), context, at=at.tz_localize("UTC"))
    pd.testing.assert_frame_equal(utc.drop(columns="timestamp"), naive.drop(columns="timestamp"))


def test_six_days_batch_is_fast(speeds: pd.DataFrame, context: f.FeatureContext) -> None:
    start = time.perf_counter()
    f.make_features(speeds, context)
    assert time.perf_counter() - start < 10.0
