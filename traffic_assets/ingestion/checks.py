"""Data-quality checks on each daily partition of `raw_traffic_events`.

Only the speed range blocks: a stored speed outside the contract means validation let an
impossible value through, and aggregating it would spread it into features and models. The
others describe a day that may still be streaming in (completeness, freshness) or a producer's
health (DLQ rate): they inform and alert, and training waits for complete days on its own.
"""

from datetime import date, timedelta

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetRecordsFilter,
    AssetsDefinition,
    asset_check,
)

from resources.kafka import KafkaResource
from resources.lake import LakeResource
from resources.network import NetworkResource
from traffic_assets.ingestion.assets import raw_traffic_events
from traffic_assets.partitions import daily_partitions
from traffic_core.events import ValidationConfig
from traffic_core.ingestion.offset_planner import OffsetProbe
from traffic_core.lake import read_raw_day
from traffic_core.windows import WINDOWS_PER_DAY

MIN_COMPLETENESS = 0.99
MAX_DLQ_RATE = 0.01
MAX_LAG = timedelta(minutes=15)


def _day(context: AssetCheckExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def _rows(context: AssetCheckExecutionContext, lake: LakeResource) -> pd.DataFrame:
    return read_raw_day(lake.path(), _day(context))


@asset_check(
    asset=raw_traffic_events,
    partitions_def=daily_partitions,
    blocking=False,
    description=f"At least {MIN_COMPLETENESS:.0%} of sensors x {WINDOWS_PER_DAY} slots have a "
    "reading (present or explicitly missing).",
)
def raw_readings_complete(
    context: AssetCheckExecutionContext, lake: LakeResource, network: NetworkResource
) -> AssetCheckResult:
    rows = _rows(context, lake)
    sensors = network.known_sensor_ids(lake.path()) or set(rows["sensor_id"])
    expected = WINDOWS_PER_DAY * len(sensors)
    slots = rows.loc[rows["sensor_id"].isin(sensors), ["sensor_id", "event_time"]]
    present = len(slots.drop_duplicates())
    completeness = present / expected if expected else 0.0
    return AssetCheckResult(
        passed=completeness >= MIN_COMPLETENESS,
        metadata={"completeness": completeness, "readings": present, "expected": expected},
    )


@asset_check(
    asset=raw_traffic_events,
    partitions_def=daily_partitions,
    blocking=True,
    description="Stored speeds lie in [0, max]; readings outside were rejected to the DLQ. "
    "Blocking: the day's aggregation waits for a run of the day that passes.",
)
def raw_speeds_in_range(
    context: AssetCheckExecutionContext, lake: LakeResource
) -> AssetCheckResult:
    speeds = _rows(context, lake)["speed_mph"].dropna()
    limit = ValidationConfig().max_speed_mph
    outside = int(((speeds < 0) | (speeds > limit)).sum())
    return AssetCheckResult(
        passed=outside == 0,
        metadata={
            "outside_range": outside,
            "min": float(speeds.min()) if len(speeds) else 0.0,
            "max": float(speeds.max()) if len(speeds) else 0.0,
        },
    )


def dlq_rate_check(asset: AssetsDefinition) -> AssetChecksDefinition:
    """The DLQ-rate check of one raw asset, from its latest materialization's metadata."""

    @asset_check(
        asset=asset,
        name="raw_dlq_rate",
        partitions_def=daily_partitions,
        blocking=False,
        description=f"Rejected messages stay below {MAX_DLQ_RATE:.0%} of those read by the "
        "latest run.",
    )
    def raw_dlq_rate(context: AssetCheckExecutionContext) -> AssetCheckResult:
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=asset.key, asset_partitions=[context.partition_key]),
            limit=1,
        ).records
        metadata = records[0].asset_materialization.metadata if records else {}
        rate_value = metadata.get("dlq_rate")
        if rate_value is None:
            return AssetCheckResult(
                passed=False, description="no ingestion run has recorded a DLQ rate for this date"
            )
        rate = float(rate_value.value)
        return AssetCheckResult(
            passed=rate <= MAX_DLQ_RATE,
            severity=AssetCheckSeverity.WARN,
            metadata={"dlq_rate": rate, "rejected": metadata["rejected"].value},
        )

    return raw_dlq_rate


raw_dlq_rate = dlq_rate_check(raw_traffic_events)


@asset_check(
    asset=raw_traffic_events,
    partitions_def=daily_partitions,
    blocking=False,
    description=f"The lake is behind the stream by at most {MAX_LAG} of event time: the day's "
    "newest stored reading against the day's end, or against the newest reading on the topic "
    "while the day is still streaming in.",
)
def raw_freshness(
    context: AssetCheckExecutionContext, lake: LakeResource, kafka: KafkaResource
) -> AssetCheckResult:
    day = _day(context)
    rows = _rows(context, lake)
    if rows.empty:
        return AssetCheckResult(passed=False, description="no readings stored for this date")
    newest_stored = rows["event_time"].max()
    day_end = pd.Timestamp(day.isoformat(), tz="UTC") + timedelta(days=1, minutes=-5)
    consumer = kafka.consumer(group_id="traffic-freshness-check")
    try:
        newest_on_topic = OffsetProbe(consumer, kafka.events_topic).newest_timestamp()
    finally:
        consumer.close()
    reference = day_end
    if newest_on_topic is not None:
        reference = min(day_end, pd.Timestamp(newest_on_topic, unit="ms", tz="UTC"))
    lag = max(reference - newest_stored, timedelta(0))
    return AssetCheckResult(
        passed=lag <= MAX_LAG,
        metadata={
            "newest_stored": str(newest_stored),
            "reference": str(reference),
            "lag_minutes": lag.total_seconds() / 60,
        },
    )
