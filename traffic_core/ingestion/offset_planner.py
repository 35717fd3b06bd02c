"""Turn new Kafka offsets into exact, per-day ingestion ranges, cheaply.

A sensor tick must return within seconds whatever the backlog, so it never reads the backlog:
it reads watermarks, the timestamps of the first and last new message of each partition, and
asks the broker's time index (offsets_for_times) where each day begins. Producers stamp every
reading with its event time, so those boundaries split a range by event date.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from functools import partial

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from traffic_core.lake import OffsetRange

DAY = timedelta(days=1)


def day_of_ms(timestamp_ms: int) -> date:
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC).date()


def day_start_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def split_by_day(
    topic: str,
    partition: int,
    first: int,
    last: int,
    first_day: date,
    last_day: date,
    day_start_offset: Callable[[date], int | None],
    day_of_offset: Callable[[int], date] | None = None,
) -> dict[date, OffsetRange]:
    """Split first..last at the first offset of each day after first_day.

    day_start_offset(day) is the first offset whose timestamp is at or after that day (None if
    there is none). Out-of-order timestamps can make those offsets non-monotonic; they are
    clipped into order, and the ingestion writes every reading under its own date anyway.
    day_of_offset(offset), the day of one message's timestamp, lets the split skip days that
    hold no message, so a gap of years (a record stamped 1970 before readings of 2012, say)
    costs one question instead of one per day.
    """
    pieces: dict[date, OffsetRange] = {}
    start, day = first, first_day
    while day < last_day and start <= last:
        next_day = day + DAY
        boundary = day_start_offset(next_day)
        boundary = last + 1 if boundary is None else min(max(boundary, start), last + 1)
        if boundary > start:
            pieces[day] = OffsetRange(topic, partition, start, boundary - 1)
            start = boundary
        day = next_day
        if day_of_offset is not None and start <= last:
            # Every day before the one of the message at `start` starts at or before `start`.
            day = min(max(day, day_of_offset(start)), last_day)
    if start <= last:
        pieces[last_day] = OffsetRange(topic, partition, start, last)
    return pieces


class OffsetProbe:
    """Cheap questions to the broker about one topic."""

    def __init__(self, consumer: Consumer, topic: str, timeout: float = 10.0) -> None:
        self.consumer = consumer
        self.topic = topic
        self.timeout = timeout

    def partitions(self) -> list[int]:
        metadata = self.consumer.list_topics(self.topic, timeout=self.timeout).topics[self.topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        return sorted(metadata.partitions)

    def watermarks(self, partition: int) -> tuple[int, int]:
        tp = TopicPartition(self.topic, partition)
        return self.consumer.get_watermark_offsets(tp, timeout=self.timeout)

    def timestamp_at(self, partition: int, offset: int) -> int:
        self.consumer.assign([TopicPartition(self.topic, partition, offset)])
        try:
            for message in self.consumer.consume(num_messages=1, timeout=self.timeout):
                error = message.error()
                if error is None and message.offset() == offset:
                    return message.timestamp()[1]
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
        finally:
            self.consumer.unassign()
        raise KafkaException(f"{self.topic}[{partition}]@{offset}: no message within timeout")

    def day_at(self, partition: int, offset: int) -> date:
        """Event day of the message at `offset`."""
        return day_of_ms(self.timestamp_at(partition, offset))

    def newest_timestamp(self) -> int | None:
        """Timestamp (ms) of the newest message of any partition; None for an empty topic."""
        newest = [
            self.timestamp_at(partition, high - 1)
            for partition in self.partitions()
            for low, high in [self.watermarks(partition)]
            if high > low
        ]
        return max(newest, default=None)

    def first_offset_at(self, partition: int, day: date) -> int | None:
        [found] = self.consumer.offsets_for_times(
            [TopicPartition(self.topic, partition, day_start_ms(day))], timeout=self.timeout
        )
        return None if found.offset < 0 else found.offset


def plan_ingestion(
    probe: OffsetProbe, cursor: Mapping[int, int], max_per_partition: int
) -> tuple[dict[date, list[OffsetRange]], dict[int, int]]:
    """New offset ranges grouped by event day, and the cursor after them.

    Each partition contributes at most max_per_partition messages per plan, so one tick's runs
    stay bounded; the rest is planned on the next tick.
    """
    plan: dict[date, list[OffsetRange]] = {}
    new_cursor = dict(cursor)
    for partition in probe.partitions():
        low, high = probe.watermarks(partition)
        start = max(cursor.get(partition, low), low)
        end = min(high, start + max_per_partition)
        if end <= start:
            continue
        first_day = probe.day_at(partition, start)
        last_day = probe.day_at(partition, end - 1)
        if last_day < first_day:
            last_day = first_day
        pieces = split_by_day(
            probe.topic,
            partition,
            start,
            end - 1,
            first_day,
            last_day,
            partial(probe.first_offset_at, partition),
            partial(probe.day_at, partition),
        )
        for day, offsets in pieces.items():
            plan.setdefault(day, []).append(offsets)
        new_cursor[partition] = end
    return plan, new_cursor
