"""Small helpers for tests that talk to the real test broker."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.stack.kafka import KafkaBroker
from traffic_core.kafka.topics import TopicSpec, ensure_topics


def fresh_topics(broker: KafkaBroker, partitions: int = 12) -> tuple[str, str]:
    """A new events topic and its DLQ, so tests never see each other's messages."""
    suffix = uuid.uuid4().hex[:8]
    events, dlq = f"events-{suffix}", f"dlq-{suffix}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    ensure_topics(admin, [TopicSpec(events, partitions), TopicSpec(dlq, 1)])
    return events, dlq


def topic_message_count(broker: KafkaBroker, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "count"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


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
