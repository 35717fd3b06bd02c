"""Reading a topic back up to its current end, from chosen offsets, without joining a group:
how observers and checks look at what a stream has committed without moving anyone's
positions. With a read_committed consumer only committed records come back; transaction
markers take offsets too, so positions, not record counts, tell when a partition is done."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime

from confluent_kafka import Consumer, Message, TopicPartition

from traffic_core.kafka.messages import partition_of

Start = Callable[[int, int, int], int]
"""(partition, low watermark, high watermark) -> the first offset to read."""


def from_beginning(_partition: int, low: int, _high: int) -> int:
    return low


def last_offsets(count: int) -> Start:
    """Start `count` offsets below each partition's end (or at its beginning)."""
    return lambda _partition, low, high: max(low, high - count)


def read_to_end(
    consumer: Consumer, topic: str, start: Start, timeout: float = 300.0, batch: int = 10_000
) -> Iterator[Message]:
    """Every record from `start` to the end each partition has now; raises TimeoutError when
    some partition was not read to its end in `timeout` seconds (the consumer must be
    unassigned and not subscribed; it is unassigned again afterwards)."""
    partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
    begin, ends = {}, {}
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout, cached=False)
        first = start(p, low, high)
        if first < high:
            begin[p], ends[p] = first, high
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in begin.items()])
    deadline = time.monotonic() + timeout
    try:
        while ends and time.monotonic() < deadline:
            for message in consumer.consume(batch, 0.5):
                if message.error() is None:
                    yield message
            for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                if tp.offset >= ends[tp.partition]:
                    del ends[tp.partition]
    finally:
        consumer.unassign()
    if ends:
        raise TimeoutError(f"{topic}: not read to its end in {timeout:.0f} s: {sorted(ends)}")


def last_values(
    consumer: Consumer, topic: str, tail: int, timeout: float = 10.0
) -> dict[int, bytes]:
    """The value of the last record of each non-empty partition among its last `tail`
    offsets; partitions not read in time are left out."""
    last: dict[int, bytes] = {}
    try:
        for message in read_to_end(consumer, topic, last_offsets(tail), timeout):
            value = message.value()
            if value is not None:
                last[partition_of(message)] = value
    except TimeoutError:
        pass  # what was read stands; an observer reports it rather than nothing
    return last


def records_per_day(
    consumer: Consumer, topic: str, since: datetime, timeout: float = 300.0
) -> dict[date, int]:
    """Records per UTC day of their Kafka timestamp, from `since` on (found by time)."""
    partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
    wanted = [TopicPartition(topic, p, int(since.timestamp() * 1000)) for p in partitions]
    found = {tp.partition: tp.offset for tp in consumer.offsets_for_times(wanted, timeout)}

    def at_since(partition: int, _low: int, high: int) -> int:
        offset = found.get(partition, -1)
        return offset if offset >= 0 else high  # -1: nothing at or after `since`

    counts: Counter[date] = Counter()
    for message in read_to_end(consumer, topic, at_since, timeout):
        _kind, stamp = message.timestamp()
        counts[datetime.fromtimestamp(stamp / 1000, UTC).date()] += 1
    return dict(sorted(counts.items()))
