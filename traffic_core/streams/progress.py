"""How far the stream processor has got, as the data team sees it in Dagster.

Read from Kafka alone, so observing never touches the processor: the aggregates topic's
committed records per partition, the newest window among each partition's last records, and
the readings the processor's group has not committed yet (what a restart would re-read).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Consumer, TopicPartition

from traffic_core.events import AGGREGATE, DecodeError, EventCodec
from traffic_core.streams.metrics import group_positions, lag_of

TAIL = 16
"""Records read back from each partition's end: transaction markers take offsets too, so the
last data record may sit a few offsets below the high watermark."""


@dataclass(frozen=True)
class StreamProgress:
    records_by_partition: dict[int, int]
    last_window_end: datetime | None
    lag_by_partition: dict[int, int]

    @property
    def records(self) -> int:
        return sum(self.records_by_partition.values())

    @property
    def lag(self) -> int:
        return sum(self.lag_by_partition.values())


def last_records(
    consumer: Consumer, topic: str, tail: int = TAIL, timeout: float = 10.0
) -> dict[int, bytes]:
    """The value of the last committed record of each non-empty partition (read_committed
    consumers only see committed ones; the caller's consumer must be one)."""
    partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
    marks = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
        for p in partitions
    }
    todo = {p: high for p, (low, high) in marks.items() if high > low}
    consumer.assign(
        [TopicPartition(topic, p, max(marks[p][0], high - tail)) for p, high in todo.items()]
    )
    last: dict[int, bytes] = {}
    deadline = time.monotonic() + timeout
    try:
        while todo and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                partition, value = message.partition(), message.value()
                if partition is not None and value is not None:
                    last[partition] = value
            positions = consumer.position([TopicPartition(topic, p) for p in todo])
            for tp in positions:
                if tp.offset >= todo[tp.partition]:
                    del todo[tp.partition]
    finally:
        consumer.unassign()
    return last


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
    for value in last_records(consumer, aggregates_topic).values():
        try:
            ends.append(codec.decode(value)["window_end"])
        except DecodeError:
            continue  # a foreign record on the topic says nothing of the processor's progress
    newest = max(ends, default=None)
    return StreamProgress(
        records_by_partition=records,
        last_window_end=None if newest is None else _utc(newest),
        lag_by_partition=lag_of(group_positions(group_consumer, events_topic)),
    )


def _utc(value: datetime | int) -> datetime:
    """Avro timestamp-millis decodes to an aware datetime; a raw int is epoch milliseconds."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(value / 1000, UTC)
