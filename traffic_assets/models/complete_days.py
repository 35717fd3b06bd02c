"""Which aggregated days are complete, so that no model is trained on a half-ingested day.

A stream never says that a day is over, so completeness is read from the stream's watermark:
producers stamp each reading with its event time and send a sensor's readings in time order to
one Kafka partition, so once every partition has delivered a reading of a later day, the day's
readings have all been sent. A day D is complete when

1. every Kafka partition that has delivered readings to the raw zone has readings dated after D
   (the watermark, the oldest of the partitions' newest event dates, has passed D's end);
2. no run for D's partition is queued or in progress (an ingestion run holding D's share of an
   offset range, or an aggregation of D);
3. D's latest `traffic_5min_aggregates` materialization is newer than its latest
   `raw_traffic_events` one, so the aggregates saw every raw file of D.

The last day of a replay that stopped is therefore not complete until later readings arrive
(at real time, once the next day begins). Readings arriving later than the watermark (out of
order, or re-sent) are written under their own day and re-aggregated, and the next retrain
includes them.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from traffic_core.lake import raw_day_dirs

RAW_EVENTS = AssetKey("raw_traffic_events")
AGGREGATES = AssetKey("traffic_5min_aggregates")
BUSY = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]
MIN_TRAINING_DAYS = 2
"""Profile features of a training day come from the other days, so one day alone would train
on missing profiles that serving never sees."""


def partition_watermarks(lake_root: Path) -> dict[tuple[str, str], date]:
    """Newest event date with raw files, per (topic, partition) folder of the raw zone."""
    newest: dict[tuple[str, str], date] = {}
    for day, day_dir in raw_day_dirs(lake_root).items():
        for folder in day_dir.glob("topic=*/partition=*"):
            key = (folder.parent.name, folder.name)
            newer = key not in newest or day > newest[key]
            if newer and any(folder.glob("offsets=*.parquet")):
                newest[key] = day
    return newest


def stream_watermark(lake_root: Path) -> date | None:
    """The newest event date every partition has reached (None before any raw readings)."""
    return min(partition_watermarks(lake_root).values(), default=None)


def complete_days(instance: DagsterInstance, lake_root: Path) -> list[str]:
    """Aggregated days (ISO dates, ascending) that are complete by the rules above."""
    watermark = stream_watermark(lake_root)
    if watermark is None:
        return []
    aggregated = instance.get_latest_storage_id_by_partition(
        AGGREGATES, DagsterEventType.ASSET_MATERIALIZATION
    )
    passed = [day for day in aggregated if date.fromisoformat(day) < watermark]
    if not passed:
        return []
    raw = instance.get_latest_storage_id_by_partition(
        RAW_EVENTS, DagsterEventType.ASSET_MATERIALIZATION, partitions=set(passed)
    )
    busy = {
        record.dagster_run.tags.get("dagster/partition")
        for record in instance.get_run_records(
            RunsFilter(tags={"dagster/partition": passed}, statuses=BUSY)
        )
    }
    return sorted(day for day in passed if day not in busy and aggregated[day] > raw.get(day, -1))
