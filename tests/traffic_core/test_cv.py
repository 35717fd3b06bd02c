"""Forward-chaining CV: every label a fold trains on lies before everything it validates on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from traffic_core.cv import forward_chaining_splits
from traffic_core.features import HORIZONS

STEP = pd.Timedelta("5min")
LARGEST = max(HORIZONS.values())


@pytest.fixture
def long_stamps() -> pd.Series:
    """Six days x 3 sensors in the long feature layout, with one step absent."""
    grid = pd.date_range("2012-03-01", periods=6 * 288, freq="5min").delete(1000)
    return pd.Series(grid.repeat(3))


def test_folds_never_look_into_the_future(long_stamps: pd.Series) -> None:
    folds = forward_chaining_splits(long_stamps, n_splits=5, gap_steps=LARGEST)
    assert len(folds) == 5
    previous_val_end = None
    previous_train = 0
    for train, val in folds:
        train_stamps, val_stamps = long_stamps.iloc[train], long_stamps.iloc[val]
        # the latest label of any training row (its largest horizon) is before validation
        assert train_stamps.max() + LARGEST * STEP < val_stamps.min()
        assert not set(train) & set(val)
        # blocks follow each other and training only grows
        if previous_val_end is not None:
            assert val_stamps.min() > previous_val_end
        previous_val_end = val_stamps.max()
        assert len(train) > previous_train
        previous_train = len(train)
    assert previous_val_end == long_stamps.max()


def test_rows_of_one_timestamp_stay_together(long_stamps: pd.Series) -> None:
    for train, val in forward_chaining_splits(long_stamps):
        for rows in (train, val):
            stamps = long_stamps.iloc[rows]
            assert (stamps.value_counts() == 3).all()


def test_the_gap_is_exactly_the_largest_horizon_on_a_regular_grid() -> None:
    stamps = pd.date_range("2012-03-01", periods=600, freq="5min")
    for train, val in forward_chaining_splits(stamps, n_splits=5, gap_steps=12):
        assert stamps[val[0]] - stamps[train[-1]] == 13 * STEP
        np.testing.assert_array_equal(train, np.arange(train[-1] + 1))


def test_too_little_data_for_the_gap_is_refused() -> None:
    stamps = pd.date_range("2012-03-01", periods=40, freq="5min")
    with pytest.raises(ValueError, match="no training data before the gap"):
        forward_chaining_splits(stamps, n_splits=5, gap_steps=12)
