"""Read the lake's 5-minute aggregates: one Parquet file per day, written by the Dagster asset
`traffic_5min_aggregates` (columns `traffic_core.windows.AGGREGATE_COLUMNS`) in the layout that
`traffic_core.lake` owns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from traffic_core.lake import AGGREGATES_ZONE, aggregates_files, raw_files

SYNTHETIC_COLUMN = "is_synthetic"

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def aggregates_dir(lake_dir: Path) -> Path:
    return Path(lake_dir).joinpath(*AGGREGATES_ZONE)


def aggregate_files(lake_dir: Path) -> dict[date, Path]:
    """The days the lake holds aggregates for, oldest first (stray folders are no days)."""
    return aggregates_files(Path(lake_dir))


def read_aggregates(
    lake_dir: Path,
    start: date,
    end: date,
    sensor_ids: Sequence[str] = (),
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows for days start..end (inclusive), optionally only some sensors; empty if none."""
    files = [p for day, p in aggregate_files(lake_dir).items() if start <= day <= end]
    filters = [("sensor_id", "in", list(sensor_ids))] if sensor_ids else None
    wanted = _existing_columns(files[0], columns) if files and columns else None
    parts = [pd.read_parquet(p, columns=wanted, filters=filters) for p in files]
    if not parts:
        return pd.DataFrame(columns=list(columns or ["sensor_id", "window_start"]))
    frame = pd.concat(parts, ignore_index=True)
    frame["window_start"] = pd.to_datetime(frame["window_start"], utc=True)
    return frame.sort_values(["sensor_id", "window_start"], ignore_index=True)


def synthetic_days(lake_dir: Path, days: Iterable[date]) -> list[date]:
    """Days whose raw readings include simulator output (`is_synthetic`); the aggregates do not
    carry the flag, so the raw zone tells. A day without raw files counts as real."""
    found = []
    for day in days:
        files = [str(p) for p in raw_files(Path(lake_dir), day)]
        if not files:
            continue
        flags = ds.dataset(files, format="parquet").to_table(columns=[SYNTHETIC_COLUMN])
        if pc.any(flags[SYNTHETIC_COLUMN]).as_py():
            found.append(day)
    return found


def _existing_columns(path: Path, columns: Sequence[str]) -> list[str]:
    """Optional columns (e.g. is_synthetic) are asked for only when the files have them."""
    present = set(pq.read_schema(path).names)
    return [c for c in columns if c in present]


def day_profile(frame: pd.DataFrame) -> pd.DataFrame:
    """One day's aggregates summed per (weekday, hour): the additive part of the heatmap, so
    each day file is read once and the heatmap is a cheap sum over days."""
    stamps = pd.to_datetime(frame["window_start"], utc=True)
    speed = frame["speed_mean"].astype("float64")
    parts = pd.DataFrame(
        {
            "weekday": stamps.dt.day_of_week,
            "hour": stamps.dt.hour,
            "speed_sum": speed.fillna(0.0),
            "speed_count": speed.notna().astype("int64"),
            "congested": frame["congestion"].isin(["congested", "severe"]).astype("int64"),
            "severe": (frame["congestion"] == "severe").astype("int64"),
        }
    )
    return parts.groupby(["weekday", "hour"], as_index=False).sum()


def weekday_hour_matrix(profiles: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Mean speed and share of congested windows per weekday and hour over the given days."""
    columns = ["weekday", "hour", "day", "mean_speed_mph", "congested_share", "severe_share"]
    if not profiles:
        return pd.DataFrame(columns=columns)
    total = pd.concat(profiles).groupby(["weekday", "hour"], as_index=False).sum()
    counted = total["speed_count"].where(total["speed_count"] > 0)
    total["mean_speed_mph"] = (total["speed_sum"] / counted).round(1)
    total["congested_share"] = (total["congested"] / counted).round(3)
    total["severe_share"] = (total["severe"] / counted).round(3)
    total["day"] = [WEEKDAYS[d] for d in total["weekday"]]
    return total[columns]
