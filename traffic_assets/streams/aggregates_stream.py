"""`traffic_aggregates_stream`: the stream processor's output, observed rather than materialized.

The processor (`python -m traffic_core.streams`) writes `traffic-aggregates` on its own; Dagster
shows it in the asset graph with what the data team asks of a stream: how many windows it has
committed (in all and per day of the last week of windows), the newest closed window, and how
far behind the readings it is.
"""

from __future__ import annotations

from dagster import DataVersion, MetadataValue, ObserveResult, observable_source_asset

from resources.kafka import KafkaResource
from traffic_core.streams.progress import stream_progress
from traffic_core.streams.settings import StreamSettings

OBSERVER_GROUP = "traffic-stream-observer"


@observable_source_asset(
    group_name="streams",
    description="5-minute aggregates per sensor on traffic-aggregates, written exactly once by "
    "the stream processor (Quix Streams); observed: records (per day of the last week), "
    "newest closed window, lag.",
)
def traffic_aggregates_stream(kafka: KafkaResource) -> ObserveResult:
    reader = kafka.consumer(OBSERVER_GROUP, **{"isolation.level": "read_committed"})
    group = kafka.consumer(StreamSettings().group_id)
    try:
        progress = stream_progress(reader, kafka.aggregates_topic, kafka.events_topic, group)
    finally:
        reader.close()
        group.close()
    last = progress.last_window_end
    return ObserveResult(
        data_version=DataVersion(f"{progress.records}:{last.isoformat() if last else '-'}"),
        metadata={
            "records": progress.records,
            "last_window_end": MetadataValue.timestamp(last) if last else "none yet",
            "lag_readings": progress.lag,
            "records_per_day": MetadataValue.json(
                {day.isoformat(): n for day, n in progress.records_per_day.items()}
            ),
            "records_by_partition": MetadataValue.json(
                {str(p): n for p, n in progress.records_by_partition.items()}
            ),
        },
    )
