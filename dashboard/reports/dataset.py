"""The rows of a report, from the lake's 5-minute aggregates or, lacking those, the API's
recent sensor history, plus the summaries the PDF prints."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from dashboard.lake import SYNTHETIC_COLUMN, read_aggregates, synthetic_days
from serving.schemas import SensorHistory
from traffic_core.windows import DEFAULT_THRESHOLDS

CORE_COLUMNS = ["sensor_id", "window_start", "speed_mean", "congestion"]
LAKE_COLUMNS = [
    *CORE_COLUMNS,
    "speed_min",
    "speed_max",
    "speed_std",
    "valid_count",
    "share_missing",
    "quality_flag",
    SYNTHETIC_COLUMN,
]


@dataclass(frozen=True)
class ReportRequest:
    start: date
    end: date
    sensor_ids: tuple[str, ...] = ()
    """Empty means every sensor."""

    def window(self) -> tuple[datetime, datetime]:
        """[start 00:00, end+1 00:00) in UTC, the clock the data is stored in."""
        first = datetime.combine(self.start, time(), tzinfo=UTC)
        after = datetime.combine(self.end, time(), tzinfo=UTC) + timedelta(days=1)
        return first, after


@dataclass(frozen=True)
class ReportData:
    request: ReportRequest
    rows: pd.DataFrame
    source: Literal["lake", "api"]
    synthetic: bool

    @property
    def source_label(self) -> str:
        return (
            "lake 5-minute aggregates"
            if self.source == "lake"
            else "prediction API sensor history (the lake had no aggregates for these days)"
        )


def from_lake(lake_dir: Path, request: ReportRequest) -> ReportData | None:
    """None when the lake has no aggregates in the range: the caller then asks the API."""
    rows = read_aggregates(
        lake_dir, request.start, request.end, request.sensor_ids, columns=LAKE_COLUMNS
    )
    if rows.empty:
        return None
    days = pd.date_range(request.start, request.end, freq="D").date
    synthetic = bool(synthetic_days(lake_dir, days)) or (
        SYNTHETIC_COLUMN in rows and bool(rows[SYNTHETIC_COLUMN].any())
    )
    return ReportData(request, rows, "lake", synthetic)


def from_history(histories: Sequence[SensorHistory], request: ReportRequest) -> ReportData:
    """Observed speeds and the forecasts made for each window, classed by the platform's
    congestion rules, restricted to the requested days."""
    records = [
        {
            "sensor_id": h.sensor_id,
            "window_start": p.window_start,
            "speed_mean": p.observed_speed_mph,
            **{
                f"forecast_{key}min_mph": f.speed_mph if f else None
                for key, f in sorted(p.forecasts.items(), key=lambda kv: int(kv[0]))
            },
            "typical_speed_mph": p.typical_speed_mph,
        }
        for h in histories
        for p in h.points
    ]
    rows = pd.DataFrame.from_records(records, columns=None if records else CORE_COLUMNS)
    rows["window_start"] = pd.to_datetime(rows["window_start"], utc=True)
    rows["speed_mean"] = rows["speed_mean"].astype("float64")
    rows["congestion"] = DEFAULT_THRESHOLDS.classify(rows["speed_mean"])
    first, after = request.window()
    rows = rows[(rows["window_start"] >= first) & (rows["window_start"] < after)]
    ordered = [*CORE_COLUMNS, *(c for c in rows.columns if c not in CORE_COLUMNS)]
    rows = rows[ordered].sort_values(["sensor_id", "window_start"], ignore_index=True)
    return ReportData(request, rows, "api", any(h.synthetic for h in histories))


def to_csv(report: ReportData) -> bytes:
    """The report's rows, speeds to 0.001 mph, times as ISO 8601 UTC ("...T08:05:00Z").

    Written by Arrow: pandas' writer takes ~8 s for a week of all sensors, Arrow ~1 s.
    """
    table = pa.Table.from_pandas(report.rows.round(3), preserve_index=False)
    column = table.schema.get_field_index("window_start")
    seconds = table["window_start"].cast(pa.timestamp("s", tz="UTC"))
    iso = pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%SZ")
    buffer = io.BytesIO()
    pa_csv.write_csv(table.set_column(column, "window_start", iso), buffer)
    return buffer.getvalue()


def sensor_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per sensor, slowest first: windows, mean/min speed, share congested and severe."""
    classified = rows.assign(
        congested=rows["congestion"].isin(["congested", "severe"]),
        severe=rows["congestion"] == "severe",
    )
    summary = classified.groupby("sensor_id").agg(
        windows=("window_start", "size"),
        mean_speed_mph=("speed_mean", "mean"),
        min_speed_mph=("speed_mean", "min"),
        congested_share=("congested", "mean"),
        severe_share=("severe", "mean"),
    )
    return summary.sort_values("mean_speed_mph").reset_index()


def speed_over_time(rows: pd.DataFrame) -> pd.Series:
    """Mean speed of the selected sensors per window."""
    return rows.groupby("window_start")["speed_mean"].mean().dropna()


def speed_by_hour(rows: pd.DataFrame) -> pd.Series:
    """Mean speed per hour of day (0..23), the daily rhythm of the selection."""
    hours = rows["window_start"].dt.hour
    return rows.groupby(hours)["speed_mean"].mean().reindex(range(24))
