"""Training reads incidents and weather from their lake zones: absent zones stay absent (None,
so the columns are NaN), present ones cover the days and the day before, in Kafka order."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from resources.lake import LakeResource
from traffic_assets.models.training_data import context_sources
from traffic_core.lake import INCIDENTS, OffsetRange, write_raw_range


def reports(offsets: list[int], starts: list[str], ends: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "incident_id": "i1",
            "sensor_id": "773869",
            "start_time": pd.to_datetime(starts, utc=True),
            "end_time": pd.to_datetime(ends, utc=True),
            "severity": "MINOR",
            "affected_sensors": [["773869"]] * len(offsets),
            "source": "synthetic",
            "is_synthetic": True,
            "kafka_topic": "traffic-incidents",
            "kafka_partition": 0,
            "kafka_offset": offsets,
        }
    )


def test_absent_zones_are_none_and_present_ones_are_read_in_kafka_order(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path))
    assert context_sources(lake, ["2012-03-02", "2012-03-03"]) == (None, None)
    # an incident starting the evening before, then its update with the real end
    write_raw_range(
        tmp_path,
        OffsetRange("traffic-incidents", 0, 7, 7),
        reports([7], ["2012-03-01 23:00"], ["2012-03-02 01:30"]),
        INCIDENTS,
    )
    write_raw_range(
        tmp_path,
        OffsetRange("traffic-incidents", 0, 3, 3),
        reports([3], ["2012-03-01 23:00"], ["2012-03-02 00:30"]),
        INCIDENTS,
    )
    write_raw_range(
        tmp_path,
        OffsetRange("traffic-incidents", 0, 9, 9),
        reports([9], ["2012-02-20 23:00"], ["2012-02-20 23:30"]),  # long before: not read
        INCIDENTS,
    )
    incidents, weather = context_sources(lake, ["2012-03-02", "2012-03-03"])
    assert weather is None
    assert incidents is not None
    assert incidents["kafka_offset"].tolist() == [3, 7]
    assert incidents["end_time"].iloc[-1] == pd.Timestamp("2012-03-02 01:30", tz="UTC")
