"""The one 5-minute window, quality and congestion definition of the platform.

Spark (`traffic_assets.aggregation.spark_windows`) implements exactly these rules over the lake,
and tests/traffic_assets/test_spark_aggregates.py proves both give the same numbers; the API applies
`aggregate_windows` to its live last hour. Pure pandas/numpy so every service can import it.

Rules, per (sensor_id, window_start):
- readings are first deduplicated to one per (sensor_id, event_time), keeping the highest
  kafka_offset: a resend replaces what it resends and never counts twice;
- a null/NaN speed is a missing reading: it counts in reading_count, never as 0 mph;
- speed_std is the sample standard deviation (ddof=1), null with fewer than 2 valid readings;
- quality_flag, first rule that holds: "missing" (no valid reading), "suspect" (std above
  SUSPECT_STD_MPH, or a flatline: FLATLINE_MIN_READINGS or more valid readings all equal),
  "partial" (some readings missing), else "ok";
- congestion classifies speed_mean with `CongestionThresholds` ("unknown" when it is null).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd

WINDOW = pd.Timedelta("5min")
WINDOWS_PER_DAY = pd.Timedelta("1D") // WINDOW

Stamps = TypeVar("Stamps", pd.Timestamp, pd.DatetimeIndex, pd.Series)

SEVERE, CONGESTED, FREE_FLOW, UNKNOWN = "severe", "congested", "free_flow", "unknown"
CONGESTION_CLASSES = (SEVERE, CONGESTED, FREE_FLOW, UNKNOWN)

OK, PARTIAL, MISSING, SUSPECT = "ok", "partial", "missing", "suspect"
QUALITY_FLAGS = (OK, PARTIAL, MISSING, SUSPECT)

SUSPECT_STD_MPH = 25.0
"""Speeds within one 5-minute window of one detector rarely spread this much; beyond it the
detector is more likely faulty than the traffic."""

FLATLINE_MIN_READINGS = 3
"""A stuck detector repeats one value; two equal readings are common, three in 5 minutes are not."""

AGGREGATE_COLUMNS = [
    "sensor_id",
    "window_start",
    "speed_mean",
    "speed_min",
    "speed_max",
    "speed_std",
    "reading_count",
    "valid_count",
    "share_missing",
    "quality_flag",
    "congestion",
]

_DTYPES = {
    "sensor_id": "object",
    "window_start": "datetime64[ns, UTC]",
    "speed_mean": "float64",
    "speed_min": "float64",
    "speed_max": "float64",
    "speed_std": "float64",
    "reading_count": "int64",
    "valid_count": "int64",
    "share_missing": "float64",
    "quality_flag": "object",
    "congestion": "object",
}


@dataclass(frozen=True)
class CongestionThresholds:
    """Caltrans classes: severe below `severe_below`, free flow from `free_flow_from` (mph)."""

    severe_below: float = 35.0
    free_flow_from: float = 60.0

    def __post_init__(self) -> None:
        bounds = (self.severe_below, self.free_flow_from)
        if not all(math.isfinite(b) for b in bounds):
            raise ValueError(f"congestion thresholds must be finite, got {bounds}")
        if not 0.0 < self.severe_below < self.free_flow_from:
            raise ValueError(
                "congestion thresholds need 0 < severe_below < free_flow_from, got "
                f"severe_below={self.severe_below}, free_flow_from={self.free_flow_from}"
            )

    def classify(self, speeds: np.ndarray | pd.Series) -> np.ndarray:
        """Class per speed; NaN (no valid reading) is "unknown", never a speed of 0."""
        values = np.asarray(speeds, dtype="float64")
        return np.select(
            [np.isnan(values), values < self.severe_below, values < self.free_flow_from],
            [UNKNOWN, SEVERE, CONGESTED],
            default=FREE_FLOW,
        ).astype(object)


DEFAULT_THRESHOLDS = CongestionThresholds()


def to_utc(ts: Stamps) -> Stamps:
    """Timestamps as UTC; naive ones are taken to be UTC already (the dataset convention)."""
    if isinstance(ts, pd.Series):
        stamps = pd.to_datetime(ts)
        return stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def window_start(ts: Stamps) -> Stamps:
    """Start (UTC) of the 5-minute window holding each timestamp; windows are [start, +5 min)."""
    stamps = to_utc(ts)
    return stamps.dt.floor(WINDOW) if isinstance(stamps, pd.Series) else stamps.floor(WINDOW)


def quality_flags(
    valid_count: np.ndarray | pd.Series,
    share_missing: np.ndarray | pd.Series,
    speed_min: np.ndarray | pd.Series,
    speed_max: np.ndarray | pd.Series,
    speed_std: np.ndarray | pd.Series,
) -> np.ndarray:
    """Flag per window from its aggregates (rules in the module docstring)."""
    valid = np.asarray(valid_count)
    flatline = (valid >= FLATLINE_MIN_READINGS) & (np.asarray(speed_min) == np.asarray(speed_max))
    with np.errstate(invalid="ignore"):
        noisy = np.asarray(speed_std, dtype="float64") > SUSPECT_STD_MPH
    return np.select(
        [valid == 0, noisy | flatline, np.asarray(share_missing) > 0],
        [MISSING, SUSPECT, PARTIAL],
        default=OK,
    ).astype(object)


def deduplicate(readings: pd.DataFrame) -> pd.DataFrame:
    """One reading per (sensor_id, event_time): the highest kafka_offset, or without offsets
    (the live path) the last one given."""
    order = ["sensor_id", "event_time"]
    if "kafka_offset" in readings.columns:
        order.append("kafka_offset")
    ranked = readings.sort_values(order, kind="stable")
    return ranked.drop_duplicates(["sensor_id", "event_time"], keep="last")


def aggregate_windows(
    readings: pd.DataFrame, thresholds: CongestionThresholds = DEFAULT_THRESHOLDS
) -> pd.DataFrame:
    """5-minute aggregates of raw readings (sensor_id, event_time, speed_mph[, kafka_offset]),
    one row per (sensor_id, window_start) holding at least one reading, sorted by both."""
    if readings.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in _DTYPES.items()})
    unique = deduplicate(
        readings.assign(
            sensor_id=readings["sensor_id"].astype(str),
            event_time=to_utc(readings["event_time"]),
        )
    )
    frame = pd.DataFrame(
        {
            "sensor_id": unique["sensor_id"],
            "window_start": window_start(unique["event_time"]),
            "speed": pd.to_numeric(unique["speed_mph"]).astype("float64"),
        }
    )
    out = (
        frame.groupby(["sensor_id", "window_start"], sort=True)["speed"]
        .agg(
            speed_mean="mean",
            speed_min="min",
            speed_max="max",
            speed_std="std",
            reading_count="size",
            valid_count="count",
        )
        .reset_index()
    )
    out["share_missing"] = (out["reading_count"] - out["valid_count"]) / out["reading_count"]
    out["quality_flag"] = quality_flags(
        out["valid_count"],
        out["share_missing"],
        out["speed_min"],
        out["speed_max"],
        out["speed_std"],
    )
    out["congestion"] = thresholds.classify(out["speed_mean"])
    return out[AGGREGATE_COLUMNS].astype(_DTYPES)


def aggregate_window(
    speeds: Sequence[float | None], thresholds: CongestionThresholds = DEFAULT_THRESHOLDS
) -> dict[str, Any]:
    """`AGGREGATE_COLUMNS` but the keys (sensor_id, window_start) of ONE window, from its
    readings already deduplicated (None = missing): the rules above for a stream processor that
    closes windows one at a time, where a group-by per window would cost milliseconds."""
    if not speeds:
        raise ValueError("a window holds at least one reading")
    valid = [float(s) for s in speeds if s is not None and not math.isnan(s)]
    nan = math.nan
    mean, low, high = (statistics.fmean(valid), min(valid), max(valid)) if valid else (nan,) * 3
    std = statistics.stdev(valid) if len(valid) > 1 else nan
    share_missing = (len(speeds) - len(valid)) / len(speeds)
    flag = quality_flags(np.array([len(valid)]), np.array([share_missing]), [low], [high], [std])[0]
    return {
        "speed_mean": mean,
        "speed_min": low,
        "speed_max": high,
        "speed_std": std,
        "reading_count": len(speeds),
        "valid_count": len(valid),
        "share_missing": share_missing,
        "quality_flag": flag,
        "congestion": thresholds.classify(np.array([mean]))[0],
    }
