"""The real broker: a produce/consume round trip and the configured topic layout."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from infra.stack.kafka import KafkaBroker
from traffic_core.kafka.topics import (
    DEFAULT_PARTITIONS,
    TopicLayoutError,
    TopicSpec,
    describe_partitions,
    ensure_topics,
    parse_partition_overrides,
    topic_layout,
)

pytestmark = pytest.mark.integration


def test_round_trip_through_real_broker(kafka_broker: KafkaBroker) -> None:
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    ensure_topics(admin, [TopicSpec(topic, 4)])
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers, "linger.ms": 5})
    sent = {f"sensor-{i % 207}:{i}".encode() for i in range(5_000)}
    for key in sent:
        producer.produce(topic, key=key, value=b"v:" + key)
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap_servers,
            "group.id": f"test-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: list[bytes] = []
    partitions: set[int] = set()
    for _ in range(200):
        for message in consumer.consume(num_messages=1000, timeout=0.5):
            assert message.error() is None
            assert message.value() == b"v:" + message.key()
            received.append(message.key())
            partitions.add(message.partition())
        if len(received) >= len(sent):
            break
    consumer.close()

    assert len(received) == len(sent)
    assert set(received) == sent
    assert partitions == {0, 1, 2, 3}


def test_platform_topics_created_with_configured_partitions(kafka_broker: KafkaBroker) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    first = ensure_topics(admin, topic_layout())
    second = ensure_topics(admin, topic_layout())

    layout = describe_partitions(admin)
    for name, count in DEFAULT_PARTITIONS.items():
        assert layout[name] == count
    assert {
        name: layout[name]
        for name in (
            "traffic-events",
            "traffic-aggregates",
            "traffic-predictions",
            "traffic-alerts",
        )
    } == {
        "traffic-events": 12,
        "traffic-aggregates": 6,
        "traffic-predictions": 6,
        "traffic-alerts": 2,
    }
    assert set(first.values()) <= {"created", "exists"}
    assert set(second.values()) == {"exists"}


def test_partition_override_grows_a_topic_and_never_shrinks(kafka_broker: KafkaBroker) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    name = f"grow-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(admin, [TopicSpec(name, 2)]) == {name: "created"}
    assert ensure_topics(admin, topic_layout(f"{name}=5"))[name] == "grown"
    assert ensure_topics(admin, [TopicSpec(name, 1)])[name] == "exists"
    assert describe_partitions(admin)[name] == 5


def test_partition_overrides_parse_and_reject_nonsense() -> None:
    assert parse_partition_overrides(" traffic-events=24 , traffic-alerts=4") == {
        "traffic-events": 24,
        "traffic-alerts": 4,
    }
    layout = {spec.name: spec.partitions for spec in topic_layout("traffic-events=24")}
    assert layout["traffic-events"] == 24 and layout["traffic-aggregates"] == 6
    for bad in ("traffic-events", "traffic-events=0", "=3", "traffic-events=x"):
        with pytest.raises(TopicLayoutError, match="expected 'topic=N'"):
            parse_partition_overrides(bad)
