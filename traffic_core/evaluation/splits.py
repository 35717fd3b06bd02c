"""Which forecasts an evaluation scores: every target from a given time on, or DCRNN's test split.

A point is a forecast issued at t (features from readings up to t) for the speed at t + horizon.
Scoring by target time (`targets_from`) keeps every scored speed out of a model trained before
that time; DCRNN's split is by issue time, as its published figures were computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from traffic_core.features import HORIZONS, LOOKBACK
from traffic_core.windows import WINDOW

PUBLISHED_MAE: dict[str, dict[int, float]] = {
    "DCRNN": {15: 2.77, 30: 3.15, 60: 3.60},
    "Graph WaveNet": {15: 2.69, 30: 3.07, 60: 3.53},
}
"""Masked MAE (mph) on the METR-LA test split at 15/30/60 minutes: DCRNN (Li et al., ICLR 2018)
and Graph WaveNet (Wu et al., IJCAI 2019). Comparable only on the full four-month file."""

DCRNN_TEST_SHARE, DCRNN_TRAIN_SHARE = 0.2, 0.7


@dataclass(frozen=True)
class TestWindow:
    """The scored points: per horizon (minutes), forecasts issued from `issued_from[minutes]`
    through `issued_until`."""

    name: str
    description: str
    issued_from: Mapping[int, pd.Timestamp]
    issued_until: pd.Timestamp

    @property
    def first_issue(self) -> pd.Timestamp:
        return min(self.issued_from.values())

    @property
    def first_target(self) -> pd.Timestamp:
        """The earliest speed scored: baselines may learn only from readings before it."""
        return min(t + HORIZONS[m] * WINDOW for m, t in self.issued_from.items())

    def scored(self, minutes: int, issued: pd.Series | pd.DatetimeIndex) -> np.ndarray:
        """Which of the forecasts issued at `issued` this window scores at that horizon."""
        stamps = pd.DatetimeIndex(issued)
        return np.asarray((stamps >= self.issued_from[minutes]) & (stamps <= self.issued_until))


def targets_from(test_from: pd.Timestamp, last_row: pd.Timestamp) -> TestWindow:
    """Every forecast whose target time is at or after `test_from`, up to the end of the data."""
    return TestWindow(
        name="test_from",
        description=f"targets from {test_from}",
        issued_from={m: test_from - steps * WINDOW for m, steps in HORIZONS.items()},
        issued_until=last_row,
    )


@dataclass(frozen=True)
class DcrnnSplit:
    """Issue rows (the row of a sample's last input reading) of DCRNN's three sample sets."""

    train: range
    val: range
    test: range


def dcrnn_split(
    n_rows: int, input_steps: int = LOOKBACK, output_steps: int = max(HORIZONS.values())
) -> DcrnnSplit:
    """DCRNN's generate_training_data.py: one sample per issue row t with inputs t-11..t and
    targets t+1..t+12, in time order; the last round(20%) of the samples test, the first
    round(70%) train, those between validate (Python's round, as there). On metr-la.h5's
    34,272 rows the test samples are issued at rows 27,410..34,259."""
    first = input_steps - 1
    samples = n_rows - first - output_steps
    if samples < 3:
        raise ValueError(f"{n_rows} rows hold no DCRNN sample of {input_steps}+{output_steps}")
    n_test = round(samples * DCRNN_TEST_SHARE)
    n_train = round(samples * DCRNN_TRAIN_SHARE)
    val_start, test_start = first + n_train, first + samples - n_test
    return DcrnnSplit(
        train=range(first, val_start),
        val=range(val_start, test_start),
        test=range(test_start, first + samples),
    )


def dcrnn_test_window(index: pd.DatetimeIndex) -> TestWindow:
    """DCRNN's test samples of a file with these rows, scored at every horizon."""
    test = dcrnn_split(len(index)).test
    start, end = index[test.start], index[test.stop - 1]
    return TestWindow(
        name="dcrnn_70_10_20",
        description=f"DCRNN 70/10/20 split: the last {len(test)} samples, issued {start} to {end}",
        issued_from=dict.fromkeys(HORIZONS, start),
        issued_until=end,
    )
