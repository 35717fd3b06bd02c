"""Stream against batch reconciliation on generated days."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from traffic_core.streams.reconcile import KEY, reconcile

DAY = pd.Timestamp("2012-03-06", tz="UTC")


def day_of(sensors: int, windows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    index = pd.MultiIndex.from_product(
        [[f"s{i}" for i in range(sensors)], DAY + pd.to_timedelta(np.arange(windows) * 5, "min")],
        names=KEY,
    )
    frame = index.to_frame(index=False)
    frame["reading_count"] = rng.integers(1, 3, len(frame))
    means = rng.uniform(5, 70, len(frame))
    means[rng.random(len(frame)) < 0.1] = np.nan  # windows without a valid speed
    frame["speed_mean"] = means
    return frame


def newest_of(stream: pd.DataFrame) -> pd.Series:
    return stream.groupby("sensor_id")["window_start"].max()


NO_LATE = pd.DataFrame(columns=KEY)
CASES = settings(derandomize=True, deadline=None, max_examples=60, database=None)


@CASES
@given(st.integers(1, 5), st.integers(1, 30), st.integers(0, 2**16))
def test_equal_days_agree(sensors: int, windows: int, seed: int) -> None:
    batch = day_of(sensors, windows, seed)
    result = reconcile(batch, batch.copy(), newest_of(batch), NO_LATE)
    assert result.passed
    assert result.compared == result.agreeing == len(batch)


@CASES
@given(st.integers(1, 5), st.integers(2, 30), st.integers(0, 2**16), st.data())
def test_differences_are_explained_only_by_late_readings(
    sensors: int, windows: int, seed: int, data: st.DataObject
) -> None:
    batch = day_of(sensors, windows, seed)
    stream = batch.copy()
    changed = data.draw(st.sets(st.integers(0, len(batch) - 1), min_size=1, max_size=len(batch)))
    late = data.draw(st.sets(st.sampled_from(sorted(changed))))
    rows = sorted(changed)
    stream.loc[rows, "reading_count"] += 1  # a reading the stream did (not) count
    result = reconcile(batch, stream, newest_of(stream), batch.loc[sorted(late), KEY])
    assert result.explained_by_late == len(late)
    assert result.unexplained == len(changed) - len(late)
    assert result.passed is (len(late) == len(changed))
    assert len(result.examples) == min(result.unexplained, 10)


@CASES
@given(st.integers(1, 5), st.integers(3, 30), st.integers(0, 2**16), st.integers(1, 2))
def test_open_windows_are_pending_and_lost_ones_missing(
    sensors: int, windows: int, seed: int, still_open: int
) -> None:
    batch = day_of(sensors, windows, seed)
    last = batch["window_start"].max() - pd.Timedelta(minutes=5 * (still_open - 1))
    stream = batch[batch["window_start"] < last]
    result = reconcile(batch, stream, newest_of(stream), NO_LATE)
    assert result.pending == sensors * still_open and result.missing_in_stream == 0
    assert result.passed

    lost = stream.drop(index=stream.index[0])  # a closed window the stream never emitted
    result = reconcile(batch, lost, newest_of(stream), NO_LATE)
    assert result.missing_in_stream == 1 and not result.passed


def test_no_stream_windows_is_no_agreement() -> None:
    batch = day_of(2, 4, 0)
    empty = batch.iloc[:0]
    result = reconcile(batch, empty, newest_of(empty), NO_LATE)
    assert result.compared == 0 and not result.passed
