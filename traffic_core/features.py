"""The one feature function: training runs it over history, the API over the live last hour.

`make_features(speeds, context)` computes every timestamp at once (batch) and
`make_features(speeds, context, at=t)` only moment t, from the trailing hour. Both run the same
row-local array code on the same 5-minute grid, and every reduction runs along a contiguous
last axis of fixed length, so a moment's numbers do not depend on how much history surrounds
it: tests/traffic_core/test_features.py proves batch and live agree exactly on the real six days.

Input is a wide speed matrix (timestamps x sensor ids, mph, NaN = missing; the 5-minute
aggregates' speed_mean pivoted). A missing reading stays missing: features that need it are NaN
and `missing_60min` counts it, it is never taken as 0 mph (METR-LA's 0.0 marker means missing).
Clock features read timestamps as given: METR-LA's local wall clock, carried as UTC in the lake.

The typical-speed profile is learned with `fit_profile` from the training window only. Never
build it from week_average.npy, which averages the full four months and would leak the answer.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

from traffic_core.datasets import SensorGraph
from traffic_core.windows import WINDOW, WINDOWS_PER_DAY

FEATURE_VERSION = "2"
"""Bump whenever a feature's definition changes; manifests record it and models trained on
another version must not be served with this code."""

HORIZONS = {15: 3, 30: 6, 60: 12}
"""Forecast horizons: minutes -> 5-minute steps (the DCRNN protocol's 3/6/12)."""

LOOKBACK = 12
"""Steps of history a moment's features use: the last hour, all the API holds."""

DIFF_STEPS = (1, 3, 6)
NEIGHBOUR_LAGS = (0, 3, 6)
ROLLING = {"15min": 3, "30min": 6, "60min": 12}
SIDES = ("upstream", "downstream", "upstream2", "downstream2")
"""Neighbour sets: direct links, and sensors two links away (a 60-minute forecast needs to see
a queue before it reaches the direct neighbour)."""
WEEK_SLOTS = 7 * WINDOWS_PER_DAY
CLOCK_NAMES = ("tod_sin", "tod_cos", "dow_sin", "dow_cos", "is_weekend")

FEATURE_NAMES: tuple[str, ...] = (
    *(f"speed_lag{k}" for k in range(LOOKBACK)),
    *(f"diff_{k}" for k in DIFF_STEPS),
    *(f"{stat}_{name}" for name in ROLLING for stat in ("mean", "std", "min")),
    "missing_60min",
    *CLOCK_NAMES,
    *(f"{side}_mean_lag{k}" for side in SIDES for k in NEIGHBOUR_LAGS),
    *(f"{side}_deviation" for side in SIDES),
    "profile_now",
    *(f"profile_{minutes}min" for minutes in HORIZONS),
    "profile_deviation",
)


def target_column(steps: int) -> str:
    """Name of the future-speed column `steps` 5-minute steps ahead, e.g. target_15min."""
    return f"target_{steps * (WINDOW // pd.Timedelta('1min'))}min"


def on_grid(
    speeds: pd.DataFrame,
    sensor_ids: Sequence[str] | None = None,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Speeds as float64 on the full 5-minute grid start..end (default: the data's span) and in
    `sensor_ids` order; absent rows, absent sensors and 0 mph become NaN, so shifting by rows
    is shifting by time."""
    if not isinstance(speeds.index, pd.DatetimeIndex):
        raise TypeError(f"speeds need a DatetimeIndex, got {type(speeds.index).__name__}")
    if (speeds.index != speeds.index.floor(WINDOW)).any():
        raise ValueError("speed timestamps must be 5-minute window starts")
    if speeds.index.has_duplicates:
        raise ValueError("speed timestamps must be unique")
    if sensor_ids is None:
        sensor_ids = speeds.columns
    frame = speeds.set_axis(speeds.columns.astype(str), axis=1)
    stamps = pd.date_range(
        speeds.index.min() if start is None else start,
        speeds.index.max() if end is None else end,
        freq=WINDOW,
        name="timestamp",
    )
    grid = frame.reindex(index=stamps, columns=[str(s) for s in sensor_ids]).astype("float64")
    return grid.mask(grid == 0.0)


def _week_slot(stamps: pd.DatetimeIndex) -> np.ndarray:
    """Monday 00:00 = 0 ... Sunday 23:55 = 2015."""
    slot = (stamps - stamps.normalize()) // WINDOW
    return np.asarray(stamps.day_of_week * WINDOWS_PER_DAY + slot)


def fit_profile(train_speeds: pd.DataFrame) -> pd.DataFrame:
    """Typical speed per sensor (columns) and week slot (rows 0..2015, Monday 00:00 first),
    learned from the training window only: the mean for that weekday and slot; where the
    window never saw that weekday, the mean over same-type days (weekday or weekend) for the
    slot; failing that, over all days. A short window thus still covers the whole week."""
    grid = on_grid(train_speeds)
    week_slot = _week_slot(grid.index)
    day, slot = np.divmod(week_slot, WINDOWS_PER_DAY)

    def table(keys: np.ndarray, groups: int) -> np.ndarray:
        means = grid.groupby(keys).mean().reindex(range(groups))
        return means.to_numpy().reshape(-1, WINDOWS_PER_DAY, grid.shape[1])

    weekend = np.arange(7) >= 5
    by_day = table(week_slot, WEEK_SLOTS)
    by_type = table((day >= 5) * WINDOWS_PER_DAY + slot, 2 * WINDOWS_PER_DAY)[weekend.astype(int)]
    by_slot = table(slot, WINDOWS_PER_DAY)
    profile = np.where(np.isnan(by_day), np.where(np.isnan(by_type), by_slot, by_type), by_day)
    return pd.DataFrame(
        profile.reshape(WEEK_SLOTS, -1),
        index=pd.RangeIndex(WEEK_SLOTS, name="week_slot"),
        columns=grid.columns,
    )


def profile_at(profile: pd.DataFrame, stamps: pd.DatetimeIndex) -> np.ndarray:
    """Profile rows for each timestamp: array (len(stamps), sensors)."""
    return profile.to_numpy()[_week_slot(stamps)]


@dataclass(eq=False)
class FeatureContext:
    """What features need besides speeds: the sensor order, the road graph (adjacency[i, j] > 0:
    i is upstream of j) and the typical-speed profile from `fit_profile`. Saved with a model so
    the API computes the same features as training did.

    The graph is kept sparse (a sensor has a handful of links), so building a context is linear
    in the number of sensors: a dense matrix and its square took 7 GB and minutes at 10,000.
    """

    sensor_ids: list[str]
    adjacency: sparse.csr_array
    profile: pd.DataFrame
    _neighbours: dict[str, tuple[np.ndarray, np.ndarray]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.sensor_ids = [str(s) for s in self.sensor_ids]
        n = len(self.sensor_ids)
        self.adjacency = sparse.csr_array(self.adjacency, dtype="float64")
        if self.adjacency.shape != (n, n):
            raise ValueError(f"adjacency is {self.adjacency.shape}, expected {(n, n)}")
        if len(self.profile) != WEEK_SLOTS:
            raise ValueError(f"profile has {len(self.profile)} rows, expected {WEEK_SLOTS}")
        self.profile = self.profile.set_axis(self.profile.columns.astype(str), axis=1).reindex(
            columns=self.sensor_ids
        )
        links = _without_diagonal(self.adjacency)
        # two links away, weighted by the path's product, excluding direct links and itself
        paths = sparse.csr_array(links @ links)
        second = _without_diagonal(paths - paths.multiply(links.astype(bool)))
        self._neighbours = {
            "upstream": _padded(sparse.csr_array(links.T)),
            "downstream": _padded(links),
            "upstream2": _padded(sparse.csr_array(second.T)),
            "downstream2": _padded(second),
        }

    @classmethod
    def from_graph(cls, graph: SensorGraph, profile: pd.DataFrame) -> FeatureContext:
        return cls(list(graph.sensor_ids), graph.adjacency, profile)

    def neighbours(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """(index, weight) arrays (sensors, max degree) of one of SIDES; padding has weight 0."""
        return self._neighbours[side]

    def save(self, path: str | os.PathLike[str]) -> None:
        """One .npz file (no pickle), stored next to the model it was trained with."""
        with open(path, "wb") as handle:
            np.savez(
                handle,
                sensor_ids=np.asarray(self.sensor_ids),
                adjacency_data=self.adjacency.data,
                adjacency_indices=self.adjacency.indices,
                adjacency_indptr=self.adjacency.indptr,
                profile=self.profile.to_numpy(),
                feature_version=np.asarray(FEATURE_VERSION),
            )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureContext:
        with np.load(path, allow_pickle=False) as data:
            version = str(data["feature_version"])
            if version != FEATURE_VERSION:
                raise ValueError(
                    f"{path}: context of feature version {version}, code is {FEATURE_VERSION}"
                )
            ids = data["sensor_ids"].tolist()
            profile = pd.DataFrame(
                data["profile"], index=pd.RangeIndex(WEEK_SLOTS, name="week_slot"), columns=ids
            )
            if "adjacency" in data:  # contexts saved before the graph was kept sparse
                return cls(ids, data["adjacency"], profile)
            parts = (data["adjacency_data"], data["adjacency_indices"], data["adjacency_indptr"])
            return cls(ids, sparse.csr_array(parts, shape=(len(ids), len(ids))), profile)


def _without_diagonal(matrix: sparse.csr_array) -> sparse.csr_array:
    matrix = sparse.csr_array(matrix, copy=True)
    matrix.setdiag(0)
    matrix.eliminate_zeros()
    return matrix


def _padded(weights: sparse.csr_array) -> tuple[np.ndarray, np.ndarray]:
    """Row i's positive columns and weights, strongest first (ties: lower column first), padded
    to the largest degree with weight 0 and the lowest other columns."""
    n = weights.shape[0]
    rows = [
        (weights.indices[lo:hi], weights.data[lo:hi])
        for lo, hi in zip(weights.indptr[:-1], weights.indptr[1:], strict=True)
    ]
    rows = [(columns[w > 0], w[w > 0]) for columns, w in rows]
    degree = max(max((len(columns) for columns, _ in rows), default=0), 1)
    index = np.empty((n, degree), dtype=np.intp)
    values = np.zeros((n, degree))
    for i, (columns, w) in enumerate(rows):
        order = np.lexsort((columns, -w))
        k = len(order)
        index[i, :k] = columns[order]
        values[i, :k] = w[order]
        if k < degree:
            index[i, k:] = np.setdiff1d(np.arange(degree + k), columns)[: degree - k]
    return index, values


def _lags(values: np.ndarray, steps: int) -> np.ndarray:
    """(T, n, steps) C-contiguous: [t, i, k] = values[t - k, i], NaN before the first row."""
    padded = np.vstack([np.full((steps - 1, values.shape[1]), np.nan), values])
    window = np.lib.stride_tricks.sliding_window_view(padded, steps, axis=0)
    return np.ascontiguousarray(window[..., ::-1])


def _neighbour_mean(values: np.ndarray, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean over the neighbours that have a reading; NaN when none has. Accumulated
    link by link (not a matrix product) so each value is summed in one fixed order, whatever
    the number of rows: BLAS would block batch and live shapes differently."""
    total = np.zeros(values.shape)
    weight = np.zeros(values.shape)
    for column, link in zip(index.T, weights.T, strict=True):
        neighbour = values[:, column]
        valid = ~np.isnan(neighbour)
        total += np.where(valid, neighbour, 0.0) * link
        weight += valid * link
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, total / weight, np.nan)


def clock_features(stamps: pd.DatetimeIndex) -> np.ndarray:
    """(len(stamps), len(CLOCK_NAMES)) time of day and week, cyclic so 23:55 is next to 00:00."""
    minutes = np.asarray(stamps.hour * 60 + stamps.minute, dtype="float64")
    day = np.asarray(stamps.day_of_week, dtype="float64")
    return np.stack(
        [
            np.sin(2 * np.pi * minutes / 1440),
            np.cos(2 * np.pi * minutes / 1440),
            np.sin(2 * np.pi * day / 7),
            np.cos(2 * np.pi * day / 7),
            (day >= 5).astype("float64"),
        ],
        axis=1,
    )


def _feature_cube(grid: pd.DataFrame, context: FeatureContext) -> np.ndarray:
    """(len(FEATURE_NAMES), T, sensors) for every row of a gridded speed frame."""
    stamps = pd.DatetimeIndex(grid.index)
    values = grid.to_numpy()
    lags = _lags(values, LOOKBACK)
    shape = values.shape
    columns: list[np.ndarray] = [lags[..., k] for k in range(LOOKBACK)]
    columns += [lags[..., 0] - lags[..., k] for k in DIFF_STEPS]
    with warnings.catch_warnings():  # all-missing windows give NaN, as intended
        warnings.simplefilter("ignore", RuntimeWarning)
        for steps in ROLLING.values():
            recent = lags[..., :steps]
            columns += [
                np.nanmean(recent, axis=-1),
                np.nanstd(recent, axis=-1, ddof=1),
                np.nanmin(recent, axis=-1),
            ]
    columns.append(np.isnan(lags).sum(axis=-1).astype("float64"))
    columns += [np.broadcast_to(c[:, None], shape) for c in clock_features(stamps).T]
    now = profile_at(context.profile, stamps)
    for side in SIDES:
        side_lags = _lags(_neighbour_mean(values, *context.neighbours(side)), LOOKBACK)
        columns += [side_lags[..., k] for k in NEIGHBOUR_LAGS]
    # how much slower than their usual the neighbours are now: a jam on its way
    columns += [_neighbour_mean(values - now, *context.neighbours(side)) for side in SIDES]
    columns.append(now)
    columns += [profile_at(context.profile, stamps + steps * WINDOW) for steps in HORIZONS.values()]
    columns.append(lags[..., 0] - now)
    return np.stack(columns)


def long_frame(
    stamps: pd.DatetimeIndex, sensor_ids: Sequence[str], names: Sequence[str], block: np.ndarray
) -> pd.DataFrame:
    """(timestamp, sensor_id, *names) from a (len(names), T, sensors) block, rows ordered by
    timestamp then sensor (the order events are produced in). The transposed block is what
    pandas stores, so the values are not copied."""
    n_f, n_t, n_s = block.shape
    frame = pd.DataFrame(block.reshape(n_f, n_t * n_s).T, columns=list(names))
    frame.insert(0, "sensor_id", np.tile(np.asarray(sensor_ids, dtype=object), n_t))
    frame.insert(0, "timestamp", stamps.repeat(n_s))
    return frame


def make_features(
    speeds: pd.DataFrame,
    context: FeatureContext,
    at: pd.Timestamp | str | None = None,
) -> pd.DataFrame:
    """Long frame (timestamp, sensor_id, *FEATURE_NAMES), float64 features, NaN where the data
    needed is missing. `at=None`: every 5-minute step of `speeds`' span (batch, for training);
    `at=t`: only moment t, from the hour of readings up to t (live, for the API)."""
    if at is None:
        grid = on_grid(speeds, context.sensor_ids)
        rows = slice(None)
    else:
        moment = pd.Timestamp(at)
        if moment != moment.floor(WINDOW):
            raise ValueError(f"at={moment} is not a 5-minute window start")
        if (moment.tz is None) != (getattr(speeds.index, "tz", None) is None):
            raise ValueError(f"at={moment} and the speeds' timestamps differ in having a zone")
        start = moment - (LOOKBACK - 1) * WINDOW
        grid = on_grid(speeds, context.sensor_ids, start, moment)
        rows = slice(-1, None)
    block = _feature_cube(grid, context)[:, rows]
    stamps = pd.DatetimeIndex(grid.index[rows])
    return long_frame(stamps, context.sensor_ids, FEATURE_NAMES, block)


def make_targets(
    speeds: pd.DataFrame,
    horizons: Sequence[int] = tuple(HORIZONS.values()),
    sensor_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Long frame (timestamp, sensor_id, target_<minutes>min per horizon in steps): the speed
    that many steps after each timestamp, NaN when missing or beyond the data. Rows align with
    `make_features` when `sensor_ids` is the context's order (default: speeds' columns)."""
    grid = on_grid(speeds, sensor_ids)
    future = [grid.shift(-steps).to_numpy() for steps in horizons]
    names = [target_column(s) for s in horizons]
    return long_frame(pd.DatetimeIndex(grid.index), grid.columns, names, np.stack(future))
