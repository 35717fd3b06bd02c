"""API answers as tidy DataFrames: pages and charts work on columns, not nested models."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from serving.schemas import (
    AlertList,
    ForecastBatch,
    HorizonForecast,
    NetworkHistory,
    NetworkStatus,
    OneForecast,
    SensorHistory,
    SensorInfo,
)

HORIZONS = (15, 30, 60)


def _utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True)


def live_sensor_frame(
    sensors: Sequence[SensorInfo],
    status: NetworkStatus | None = None,
    batch: ForecastBatch | None = None,
) -> pd.DataFrame:
    """One row per sensor: location, what it sees now and, when a model runs, its forecasts.

    The forecast batch carries the observed speed too; the status is the fallback while no
    model is published, and sensors alone still place every detector on the map.
    """
    rows = {
        s.sensor_id: {
            "sensor_id": s.sensor_id,
            "latitude": s.latitude,
            "longitude": s.longitude,
            "observed_speed": None,
            "observed_congestion": "unknown",
            **{
                f"f{m}_{name}": "unknown" if name == "congestion" else None
                for m in HORIZONS
                for name in ("speed", "lower", "upper", "congestion", "reason")
            },
        }
        for s in sensors
    }
    for reading in status.sensors if status else ():
        row = rows.get(reading.sensor_id)
        if row is not None:
            row.update(observed_speed=reading.speed_mph, observed_congestion=reading.congestion)
    for forecast in batch.forecasts if batch else ():
        row = rows.get(forecast.sensor_id)
        if row is None:
            continue
        row.update(
            observed_speed=forecast.observed_speed_mph,
            observed_congestion=forecast.observed_congestion,
        )
        for h in forecast.horizons:
            row.update(_horizon_columns(h))
    frame = pd.DataFrame(list(rows.values()))
    numeric = [c for c in frame.columns if c.endswith(("_speed", "_lower", "_upper"))]
    frame[numeric] = frame[numeric].astype("float64")
    return frame


def _horizon_columns(h: HorizonForecast) -> dict[str, object]:
    prefix = f"f{h.minutes}_"
    return {
        f"{prefix}speed": h.speed_mph,
        f"{prefix}lower": h.lower_mph,
        f"{prefix}upper": h.upper_mph,
        f"{prefix}congestion": h.congestion,
        f"{prefix}reason": h.reason,
    }


def sensor_observed_frame(history: SensorHistory) -> pd.DataFrame:
    """Per window: observed and typical speed, long form for one layered chart."""
    rows = [
        {"window_start": p.window_start, "series": series, "speed": speed}
        for p in history.points
        for series, speed in (("Observed", p.observed_speed_mph), ("Typical", p.typical_speed_mph))
    ]
    frame = pd.DataFrame(rows, columns=["window_start", "series", "speed"])
    frame["window_start"] = _utc(frame["window_start"])
    frame["speed"] = frame["speed"].astype("float64")
    return frame


def sensor_forecast_frame(
    history: SensorHistory, current: OneForecast | None = None
) -> pd.DataFrame:
    """Per window and horizon: the forecast made earlier for that window and its interval.

    A window without one (withheld, with its `reason`, or never made) is a row of NaN, so a
    chart breaks its line there instead of joining the neighbours across the gap. Forecasts
    still ahead (from the current one) are appended with `ahead=True`, so a chart can continue
    past the last observation.
    """
    rows = [
        {**_forecast_row(f, p.window_start, int(minutes)), "ahead": False}
        for p in history.points
        for minutes, f in p.forecasts.items()
    ]
    if current is not None:
        rows += [
            {**_forecast_row(h, h.target_time, h.minutes), "ahead": True} for h in current.horizons
        ]
    columns = ["window_start", "horizon", "forecast", "lower", "upper", "reason", "ahead"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["window_start"] = _utc(frame["window_start"])
    frame[["forecast", "lower", "upper"]] = frame[["forecast", "lower", "upper"]].astype("float64")
    return frame


def _forecast_row(
    h: HorizonForecast | None, window_start: object, minutes: int
) -> dict[str, object]:
    return {
        "window_start": window_start,
        "horizon": minutes,
        "forecast": None if h is None else h.speed_mph,
        "lower": None if h is None else h.lower_mph,
        "upper": None if h is None else h.upper_mph,
        "reason": None if h is None else h.reason,
    }


def network_history_frame(history: NetworkHistory) -> pd.DataFrame:
    columns = ["window_start", "average_speed_mph", "sensors_reporting", "congested", "severe"]
    frame = pd.DataFrame([p.model_dump() for p in history.points], columns=columns)
    frame["window_start"] = _utc(frame["window_start"])
    frame["average_speed_mph"] = frame["average_speed_mph"].astype("float64")
    return frame


def alerts_frame(alerts: AlertList) -> pd.DataFrame:
    columns = [
        "raised_at",
        "kind",
        "sensor_id",
        "horizon_minutes",
        "target_time",
        "from_congestion",
        "to_congestion",
        "forecast_speed_mph",
        "model_version",
        "synthetic",
        "alert_id",
    ]
    frame = pd.DataFrame([a.model_dump() for a in alerts.alerts], columns=columns)
    for column in ("raised_at", "target_time"):
        frame[column] = _utc(frame[column])
    return frame
