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
   `raw_traffic_events` one, so the aggregates saw every raw file of D;
4. no check in `TRAINING_GATES` failed on that materialization (too few windows, impossible
   speeds): such a day waits for a re-aggregation that passes.

The last day of a replay that stopped is therefore not complete until later readings arrive
(at real time, once the next day begins). Readings arriving later than the watermark (out of
order, or re-sent) are written under their own day and re-aggregated, and the next retrain
includes them.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from traffic_assets.aggregation.checks import speeds_in_range, windows_complete
from traffic_core.lake import raw_day_dirs

RAW_EVENTS = AssetKey("raw_traffic_events")
AGGREGATES = AssetKey("traffic_5min_aggregates")
BUSY = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]
TRAINING_GATES: list[AssetCheckKey] = [
    key for check in (windows_complete, speeds_in_range) for key in check.check_keys
]
"""Checks on a day's aggregates that must pass before any model trains on the day."""
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
    failed = failed_training_gates(instance, passed)
    return sorted(
        day
        for day in passed
        if day not in busy and day not in failed and aggregated[day] > raw.get(day, -1)
    )


def failed_training_gates(instance: DagsterInstance, days: list[str]) -> set[str]:
    """Days whose latest aggregates failed a check in `TRAINING_GATES`."""
    infos = instance.event_log_storage.get_asset_check_partition_info(
        TRAINING_GATES, partition_keys=days
    )
    return {
        info.partition_key
        for info in infos
        if info.partition_key is not None
        and info.is_current
        and info.latest_execution_status is AssetCheckExecutionRecordStatus.FAILED
    }
