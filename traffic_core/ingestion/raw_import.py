"""A wide speed table (time x sensor) written straight into the raw zone, as ingestion stores
it, for benches and tests that need a lake of real or simulated days without a Kafka replay."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from traffic_core.ingestion.ingest_ids import new_ingest_id
from traffic_core.lake import OffsetRange, write_raw_range
from traffic_core.lake_storage import LakePath


def write_speeds_as_raw(
    lake_root: LakePath,
    speeds: pd.DataFrame,
    *,
    source: str,
    is_synthetic: bool,
    topic: str = "replay",
    ingest_id: str | None = None,
) -> list[date]:
    """One offset range (and so one file) per day on partition 0; returns the days written.

    A naive index is taken as UTC, the event-time zone of the raw zone. The rows carry an
    ingest id (`import-<UTC time>-<hex>` unless given), so what a model learnt from imported
    days is as traceable as what came through Kafka.
    """
    ingest_id = ingest_id or new_ingest_id(prefix="import")
    stamps = speeds.index if speeds.index.tz is not None else speeds.index.tz_localize("UTC")
    offset = 0
    for day in sorted(set(stamps.date)):
        in_day = stamps.date == day
        frame = speeds.loc[in_day]
        n_t, n_s = frame.shape
        rows = pd.DataFrame(
            {
                "sensor_id": np.tile(frame.columns.to_numpy(dtype=object), n_t),
                "event_time": np.repeat(stamps[in_day], n_s),
                "speed_mph": frame.to_numpy(dtype=np.float64).ravel(),
                "volume": pd.array([None] * (n_t * n_s), dtype="Int32"),
                "occupancy": np.nan,
                "source": source,
                "is_synthetic": is_synthetic,
                "kafka_topic": topic,
                "kafka_partition": 0,
                "kafka_offset": np.arange(offset, offset + n_t * n_s, dtype=np.int64),
                "ingest_id": ingest_id,
            }
        )
        write_raw_range(lake_root, OffsetRange(topic, 0, offset, offset + len(rows) - 1), rows)
        offset += len(rows)
    return sorted(set(stamps.date))
