"""The core window definition: dedup, missing readings, stddev, flags, congestion classes."""

import math

import numpy as np
import pandas as pd
import pytest

from traffic_core import windows as w

T0 = pd.Timestamp("2012-03-01 08:00", tz="UTC")


def readings(rows: list[tuple[str, str, float | None, int]]) -> pd.DataFrame:
    """(sensor_id, offset into the day as a timedelta string, speed or None, kafka_offset)."""
    return pd.DataFrame(
        {
            "sensor_id": [r[0] for r in rows],
            "event_time": [T0 + pd.Timedelta(r[1]) for r in rows],
            "speed_mph": pd.array([r[2] for r in rows], dtype="Float64").astype("float64"),
            "kafka_offset": [r[3] for r in rows],
        }
    )


def one(frame: pd.DataFrame) -> pd.Series:
    assert len(frame) == 1, frame
    return frame.iloc[0]


def test_window_start_floors_to_five_minutes_and_treats_naive_as_utc() -> None:
    assert w.window_start(pd.Timestamp("2012-03-01 00:04:59.999")) == pd.Timestamp(
        "2012-03-01 00:00", tz="UTC"
    )
    assert w.window_start(pd.Timestamp("2012-03-01 00:05", tz="UTC")) == pd.Timestamp(
        "2012-03-01 00:05", tz="UTC"
    )
    local = pd.DatetimeIndex(["2012-03-01 00:07"], tz="America/Los_Angeles")
    assert list(w.window_start(local)) == [pd.Timestamp("2012-03-01 08:05", tz="UTC")]
    assert w.WINDOWS_PER_DAY == 288


def test_duplicates_keep_the_highest_offset_and_count_once() -> None:
    out = w.aggregate_windows(
        readings([("s1", "0min", 70.0, 9), ("s1", "0min", 20.0, 3), ("s1", "0min", 30.0, 5)])
    )
    row = one(out)
    assert (row.speed_mean, row.reading_count, row.valid_count) == (70.0, 1, 1)


def test_a_resend_can_replace_a_reading_with_a_missing_one() -> None:
    row = one(w.aggregate_windows(readings([("s1", "0min", 50.0, 1), ("s1", "0min", None, 2)])))
    assert (row.reading_count, row.valid_count, row.quality_flag) == (1, 0, w.MISSING)


def test_without_offsets_the_last_reading_given_wins() -> None:
    frame = readings([("s1", "0min", 50.0, 0), ("s1", "0min", 40.0, 0)]).drop(
        columns="kafka_offset"
    )
    assert one(w.aggregate_windows(frame)).speed_mean == 40.0


def test_missing_readings_are_never_zero_mph() -> None:
    out = w.aggregate_windows(
        readings([("s1", "0min", 60.0, 1), ("s1", "1min", None, 2), ("s1", "2min", np.nan, 3)])
    )
    row = one(out)
    assert (row.speed_mean, row.speed_min, row.speed_max) == (60.0, 60.0, 60.0)
    assert (row.reading_count, row.valid_count) == (3, 1)
    assert row.share_missing == pytest.approx(2 / 3)
    assert row.quality_flag == w.PARTIAL


def test_window_without_valid_reading_is_missing_and_unknown() -> None:
    row = one(w.aggregate_windows(readings([("s1", "0min", None, 1), ("s1", "3min", None, 2)])))
    assert math.isnan(row.speed_mean) and math.isnan(row.speed_std)
    assert (row.share_missing, row.quality_flag, row.congestion) == (1.0, w.MISSING, w.UNKNOWN)


def test_stddev_is_sample_stddev_and_null_below_two_readings() -> None:
    out = w.aggregate_windows(
        readings(
            [
                ("s1", "0min", 50.0, 1),
                ("s1", "2min", 54.0, 2),
                ("s2", "0min", 50.0, 3),
                ("s2", "1min", None, 4),
            ]
        )
    ).set_index("sensor_id")
    assert out.loc["s1", "speed_std"] == pytest.approx(np.std([50.0, 54.0], ddof=1))
    assert math.isnan(out.loc["s2", "speed_std"])


def test_suspect_for_noise_and_for_a_flatline() -> None:
    noisy = one(w.aggregate_windows(readings([("s1", "0min", 10.0, 1), ("s1", "1min", 65.0, 2)])))
    assert noisy.speed_std > w.SUSPECT_STD_MPH and noisy.quality_flag == w.SUSPECT
    flat = [("s1", f"{m}min", 55.0, m) for m in range(w.FLATLINE_MIN_READINGS)]
    assert one(w.aggregate_windows(readings(flat))).quality_flag == w.SUSPECT
    assert one(w.aggregate_windows(readings(flat[:-1]))).quality_flag == w.OK


def test_windows_split_at_five_minutes_per_sensor_and_sort() -> None:
    out = w.aggregate_windows(
        readings([("s2", "4min", 40.0, 1), ("s1", "5min", 41.0, 2), ("s1", "4min59s", 42.0, 3)])
    )
    assert list(out.sensor_id) == ["s1", "s1", "s2"]
    assert list(out.window_start - T0) == [pd.Timedelta(0), w.WINDOW, pd.Timedelta(0)]
    assert list(out.columns) == w.AGGREGATE_COLUMNS


@pytest.mark.parametrize(
    ("speed", "expected"),
    [
        (0.0, w.SEVERE),
        (34.999, w.SEVERE),
        (35.0, w.CONGESTED),
        (59.999, w.CONGESTED),
        (60.0, w.FREE_FLOW),
        (85.0, w.FREE_FLOW),
        (np.nan, w.UNKNOWN),
    ],
)
def test_congestion_classes_at_the_boundaries(speed: float, expected: str) -> None:
    assert list(w.DEFAULT_THRESHOLDS.classify(np.array([speed]))) == [expected]


def test_congestion_uses_the_window_mean_and_custom_thresholds() -> None:
    frame = readings([("s1", "0min", 30.0, 1), ("s1", "1min", 42.0, 2)])  # mean 36
    assert one(w.aggregate_windows(frame)).congestion == w.CONGESTED
    strict = w.CongestionThresholds(severe_below=40.0, free_flow_from=65.0)
    assert one(w.aggregate_windows(frame, strict)).congestion == w.SEVERE
    assert list(strict.classify(pd.Series([65.0, 64.9]))) == [w.FREE_FLOW, w.CONGESTED]


@pytest.mark.parametrize(
    ("severe", "free"), [(60.0, 35.0), (40.0, 40.0), (0.0, 60.0), (35.0, math.inf)]
)
def test_thresholds_are_validated(severe: float, free: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        w.CongestionThresholds(severe_below=severe, free_flow_from=free)


def test_empty_input_gives_empty_typed_frame() -> None:
    out = w.aggregate_windows(readings([]))
    assert out.empty and list(out.columns) == w.AGGREGATE_COLUMNS
    assert str(out["window_start"].dtype) == "datetime64[ns, UTC]"
    assert out["reading_count"].dtype == np.int64
