"""Small helpers for tests that talk to the real test broker."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.stack.kafka import KafkaBroker
from traffic_core.kafka.topics import TopicSpec, ensure_topics

ONE_AND_THREE_BROKERS = pytest.mark.parametrize(
    "kafka_service", ["kafka_broker", "kafka_cluster"], ids=["1-broker", "3-brokers"], indirect=True
)
"""Run a test against one broker and against the three-broker cluster (replication 3)."""


def fresh_topics(broker: KafkaBroker, partitions: int = 12) -> tuple[str, str]:
    """A new events topic and its DLQ, replicated as the broker count asks, so tests never see
    each other's messages."""
    suffix = uuid.uuid4().hex[:8]
    events, dlq = f"events-{suffix}", f"dlq-{suffix}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    specs = [TopicSpec(events, partitions), TopicSpec(dlq, 1)]
    ensure_topics(admin, specs, broker.replication)
    return events, dlq


def topic_message_count(broker: KafkaBroker, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "count"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for partition in metadata.partitions:
            low, high = _watermarks(consumer, TopicPartition(topic, partition))
            total += high - low
        return total
    finally:
        consumer.close()


def end_offsets(broker: KafkaBroker, topic: str) -> dict[int, int]:
    """Each partition's high watermark: the offset a group that read everything commits."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "ends"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        return {p: _watermarks(consumer, TopicPartition(topic, p))[1] for p in metadata.partitions}
    finally:
        consumer.close()


def _watermarks(consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
    """A freshly created partition can answer NOT_LEADER for a moment; ask again."""
    for attempt in range(20):
        try:
            return consumer.get_watermark_offsets(tp, timeout=10)
        except KafkaException as exc:
            transient = exc.args[0].code() == KafkaError.NOT_LEADER_FOR_PARTITION
            if not transient or attempt == 19:
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


def read_all(
    broker: KafkaBroker, topic: str, expected: int, timeout_loops: int = 120
) -> list[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": f"read-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    try:
        for _ in range(timeout_loops):
            messages += [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
            if len(messages) >= expected:
                break
    finally:
        consumer.close()
    return messages
