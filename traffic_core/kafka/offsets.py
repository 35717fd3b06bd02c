"""Offsets, timestamps and a group's committed positions per partition, asked of the brokers
without consuming.

Kafka timestamps on the platform's topics are event times (readings) or window starts
(aggregates), so "the newest timestamp" says how far a topic's data reaches in event time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec


def list_offsets(
    admin: AdminClient,
    tps: Iterable[TopicPartition],
    spec: OffsetSpec | Mapping[int, OffsetSpec],
    timeout: float = 10.0,
) -> dict[int, Any]:
    """ListOffsets for each partition (one spec for all, or one per partition id)."""
    request = {tp: spec[tp.partition] if isinstance(spec, Mapping) else spec for tp in tps}
    if not request:
        return {}
    futures = admin.list_offsets(request, request_timeout=timeout)
    return {tp.partition: future.result() for tp, future in futures.items()}


def newest_timestamp(admin: AdminClient, topic: str, timeout: float = 10.0) -> datetime | None:
    """The largest record timestamp in the topic, None when it holds no record (or the topic
    does not exist)."""
    metadata = admin.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return None
    tps = [TopicPartition(topic, p) for p in metadata.partitions]
    found = list_offsets(admin, tps, OffsetSpec.max_timestamp(), timeout)
    stamps = [info.timestamp for info in found.values() if info.offset >= 0 and info.timestamp >= 0]
    return datetime.fromtimestamp(max(stamps) / 1000, UTC) if stamps else None


def group_positions(
    consumer: Consumer, topic: str, timeout: float = 10.0
) -> dict[int, tuple[int, int]]:
    """(committed offset, high watermark) per partition of topic for the consumer's group.

    Read through a consumer of the group that never joins it: the admin client's
    ListConsumerGroupOffsets crashes librdkafka 2.16 (a null consumer group in its error
    handling) when the coordinator answers with an error, as it does while it loads. Such an
    error raises KafkaException here too, rather than reading as "nothing committed"."""
    partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
    committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout)
    for tp in committed:
        if tp.error is not None:
            raise KafkaException(tp.error)
    return {
        tp.partition: (
            tp.offset,
            consumer.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=timeout, cached=False
            )[1],
        )
        for tp in committed
    }


def lag_of(positions: dict[int, tuple[int, int]]) -> dict[int, int]:
    """Messages after the committed offset (all of them where nothing is committed yet)."""
    return {p: max(high - max(done, 0), 0) for p, (done, high) in positions.items()}
