"""Shared set-up for tests of what Dagster reads from the stream processor's topics."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from confluent_kafka.admin import AdminClient

from infra.stack.kafka import KafkaBroker
from tests.kafka_helpers import fresh_topics
from traffic_core.kafka.topics import TopicSpec, ensure_topics


@dataclass(frozen=True)
class StreamTopics:
    events: str
    dlq: str
    aggregates: str
    group: str


def stream_topics(broker: KafkaBroker, monkeypatch: pytest.MonkeyPatch) -> StreamTopics:
    """Fresh readings, DLQ and aggregates topics, and a fresh processor group id (set where
    the platform reads it), so tests never see each other's records."""
    events, dlq = fresh_topics(broker, partitions=1)
    aggregates = f"aggregates-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    ensure_topics(admin, [TopicSpec(aggregates, 2)])
    group = f"stream-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TRAFFIC_STREAM_GROUP_ID", group)
    return StreamTopics(events, dlq, aggregates, group)


def aggregate_record(sensor: str, start: datetime, count: int = 2, mean: float = 61.0) -> dict:
    """A `traffic_aggregate` record as the processor writes one."""
    return {
        "sensor_id": sensor,
        "window_start": start,
        "window_end": start + timedelta(minutes=5),
        "speed_mean": mean,
        "speed_min": mean,
        "speed_max": mean,
        "speed_std": None,
        "reading_count": count,
        "valid_count": count,
        "share_missing": 0.0,
        "quality_flag": "ok",
        "congestion": "free_flow",
        "is_synthetic": True,
        "emitted_at": start + timedelta(minutes=10),
    }
