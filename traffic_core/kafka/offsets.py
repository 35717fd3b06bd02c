"""Offsets and timestamps of a topic's partitions, asked of the brokers without consuming.

Kafka timestamps on the platform's topics are event times (readings) or window starts
(aggregates), so "the newest timestamp" says how far a topic's data reaches in event time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import TopicPartition
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
