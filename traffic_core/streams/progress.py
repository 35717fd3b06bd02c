"""How far the stream processor has got, as the data team sees it in Dagster.

Read from Kafka alone, so observing never touches the processor: the aggregates topic's
committed records per partition, the newest window among each partition's last records, the
records per day of the last days (records carry their window start as Kafka timestamp), and
the readings the processor's group has not committed yet (what a restart would re-read).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from confluent_kafka import Consumer, TopicPartition

from traffic_core.events import AGGREGATE, DecodeError, EventCodec
from traffic_core.kafka.offsets import group_positions, lag_of
from traffic_core.kafka.read_back import last_values, records_per_day

TAIL = 16
"""Records read back from each partition's end: transaction markers take offsets too, so the
last data record may sit a few offsets below the high watermark."""

DAYS_COUNTED = 7
"""Days of windows counted per observation, ending with the newest window's day: enough to see
a day fill up or fall short, without reading a whole topic's retention every few minutes."""

WINDOW_SLACK = timedelta(milliseconds=1)
"""A window ending at midnight belongs to the day before (records carry their window start)."""


@dataclass(frozen=True)
class StreamProgress:
    records_by_partition: dict[int, int]
    last_window_end: datetime | None
    lag_by_partition: dict[int, int]
    records_per_day: dict[date, int]

    @property
    def records(self) -> int:
        return sum(self.records_by_partition.values())

    @property
    def lag(self) -> int:
        return sum(self.lag_by_partition.values())


def stream_progress(
    consumer: Consumer, aggregates_topic: str, events_topic: str, group_consumer: Consumer
) -> StreamProgress:
    """`consumer` reads the aggregates (read_committed); `group_consumer` is configured with the
    processor's group id and only asks for its committed offsets."""
    codec = EventCodec(AGGREGATE)
    partitions = consumer.list_topics(aggregates_topic, timeout=10).topics[aggregates_topic]
    records = {}
    for p in partitions.partitions:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(aggregates_topic, p), timeout=10, cached=False
        )
        records[p] = high - low
    ends = []
    for value in last_values(consumer, aggregates_topic, TAIL).values():
        try:
            ends.append(codec.decode(value)["window_end"])
        except DecodeError:
            continue  # a foreign record on the topic says nothing of the processor's progress
    newest = None if not ends else _utc(max(ends))
    per_day = {}
    if newest is not None:
        first_day = (newest - WINDOW_SLACK).date() - timedelta(days=DAYS_COUNTED - 1)
        since = datetime.combine(first_day, datetime.min.time(), UTC)
        per_day = records_per_day(consumer, aggregates_topic, since)
    return StreamProgress(
        records_by_partition=records,
        last_window_end=newest,
        lag_by_partition=lag_of(group_positions(group_consumer, events_topic)),
        records_per_day=per_day,
    )


def _utc(value: datetime | int) -> datetime:
    """Avro timestamp-millis decodes to an aware datetime; a raw int is epoch milliseconds."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(value / 1000, UTC)
