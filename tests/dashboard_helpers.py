"""What the dashboard tests share: a lake holding real METR-LA days as the pipeline writes them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import numpy as np

from serving.schemas import ForecastBatch, SensorInfo
from traffic_core.datasets.graph import load_metr_la_graph
from traffic_core.datasets.speeds import load_speed_csv, to_long
from traffic_core.lake import aggregates_file
from traffic_core.windows import aggregate_windows

SIX_DAYS = "metr-la/los_loop_speed_2012-03-01_to_03-06.csv"


def real_network() -> list[SensorInfo]:
    """The 207 METR-LA sensors with their road-graph links, as the API's /v1/sensors has them."""
    graph = load_metr_la_graph()
    loc = graph.locations.set_index("sensor_id")
    return [
        SensorInfo(
            sensor_id=s,
            latitude=loc.loc[s, "latitude"],
            longitude=loc.loc[s, "longitude"],
            upstream=graph.upstream(s),
            downstream=graph.downstream(s),
        )
        for s in graph.sensor_ids
    ]


def write_real_lake(
    root: Path, shared_data: Path, days: Sequence[date], sensors: int | None = None
) -> Path:
    """5-minute aggregates of real days (the first `sensors` sensors, or all), computed by the
    core rules the Spark asset implements and stored in its layout."""
    speeds = load_speed_csv(shared_data / SIX_DAYS)
    for day in days:
        readings = to_long(speeds.loc[str(day)].iloc[:, :sensors])
        raw = readings.rename(columns={"timestamp": "event_time"})
        raw["kafka_offset"] = np.arange(len(raw))
        path = aggregates_file(root, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        aggregate_windows(raw).to_parquet(path)
    return root


def sensor(sensor_id: str, up: list[str], down: list[str], lon: float = -118.0) -> SensorInfo:
    """A sensor on the 34th parallel, linked by hand."""
    return SensorInfo(
        sensor_id=sensor_id, latitude=34.0, longitude=lon, upstream=up, downstream=down
    )


def batch_for(sensor_id: str) -> ForecastBatch:
    """Forecasts for one sensor: congested now, severe in 15 minutes (25-35 mph)."""
    horizon = {
        "minutes": 15,
        "target_time": "2012-03-06T08:15:00Z",
        "speed_mph": 30.0,
        "lower_mph": 25.0,
        "upper_mph": 35.0,
        "coverage": 0.9,
        "congestion": "severe",
    }
    return ForecastBatch.model_validate(
        {
            "model_version": "v1",
            "issued_for": "2012-03-06T08:00:00Z",
            "synthetic": False,
            "forecasts": [
                {
                    "sensor_id": sensor_id,
                    "issued_for": "2012-03-06T08:00:00Z",
                    "observed_speed_mph": 50.0,
                    "observed_congestion": "congested",
                    "horizons": [horizon],
                }
            ],
        }
    )
