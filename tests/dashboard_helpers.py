"""What the dashboard tests share: a lake holding real METR-LA days as the pipeline writes them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import numpy as np

from dashboard.lake import AGGREGATES_ZONE, PART_FILE
from traffic_core.datasets.speeds import load_speed_csv, to_long
from traffic_core.windows import aggregate_windows

SIX_DAYS = "metr-la/los_loop_speed_2012-03-01_to_03-06.csv"


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
        path = root.joinpath(*AGGREGATES_ZONE, f"date={day}", PART_FILE)
        path.parent.mkdir(parents=True, exist_ok=True)
        aggregate_windows(raw).to_parquet(path)
    return root
