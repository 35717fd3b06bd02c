"""`stream_agrees_with_batch`: each lake day of aggregates against the stream's windows.

Non-blocking: the stream is a second computation of the same windows for live consumers; a
disagreement says the two paths differ (a lost or doubled window, a changed definition), which
the data team must see, but the lake day itself stays the training input it was.
"""

from datetime import date

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    MetadataValue,
    asset_check,
)

from resources.kafka import KafkaResource
from resources.lake import LakeResource
from traffic_assets.aggregation.assets import traffic_5min_aggregates
from traffic_assets.partitions import daily_partitions
from traffic_core.streams.reconcile import late_windows, reconcile, stream_windows
from traffic_core.streams.settings import StreamSettings

READER_GROUP = "traffic-stream-reconciliation"


@asset_check(
    asset=traffic_5min_aggregates,
    partitions_def=daily_partitions,
    blocking=False,
    description="The stream processor's closed windows of the day on traffic-aggregates equal "
    "the lake's (reading counts equal, means within 1e-9); a difference must be explained by a "
    "reading the stream sent to the DLQ as LATE_READING. Windows the stream has not closed yet "
    "are counted as pending.",
)
def stream_agrees_with_batch(
    context: AssetCheckExecutionContext, kafka: KafkaResource, lake: LakeResource
) -> AssetCheckResult:
    return check_day(date.fromisoformat(context.partition_key), kafka, lake)


def check_day(day: date, kafka: KafkaResource, lake: LakeResource) -> AssetCheckResult:
    path = lake.aggregates_file(day)
    if not path.is_file():
        return AssetCheckResult(passed=False, description=f"no aggregates file for {day}")
    batch = pd.read_parquet(
        path, columns=["sensor_id", "window_start", "reading_count", "speed_mean"]
    )
    reader = kafka.consumer(READER_GROUP, **{"isolation.level": "read_committed"})
    try:
        stream, newest = stream_windows(reader, kafka.aggregates_topic, day)
        late = late_windows(reader, kafka.dlq_topic, StreamSettings().group_id)
    finally:
        reader.close()
    result = reconcile(batch, stream, newest, late)
    if result.passed:
        summary = f"{result.agreeing} windows agree"
    elif result.compared == 0:
        summary = "the stream has closed no window of this day yet"
    else:
        summary = (
            f"{result.unexplained} windows differ without a late reading, "
            f"{result.missing_in_stream} closed windows missing from the stream, "
            f"{result.only_in_stream} only in the stream"
        )
    return AssetCheckResult(
        passed=result.passed,
        severity=AssetCheckSeverity.WARN,
        description=summary,
        metadata={
            "compared": result.compared,
            "agreeing": result.agreeing,
            "explained_by_late": result.explained_by_late,
            "unexplained": result.unexplained,
            "missing_in_stream": result.missing_in_stream,
            "only_in_stream": result.only_in_stream,
            "pending_in_stream": result.pending,
            "examples": MetadataValue.json(result.examples),
        },
    )
