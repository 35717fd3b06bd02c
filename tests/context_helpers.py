"""Incidents and weather produced for the API's and the dashboard's real-broker tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from api_fixtures import ApiServer
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from traffic_core.events import INCIDENT, EventCodec
from traffic_core.kafka.topics import TopicSpec, ensure_topics

START = datetime(2012, 3, 6, 7, 30, tzinfo=UTC)
"""Within the two replayed hours of the API fixtures (6 March 2012, 06:00-08:00)."""


def produce(server: ApiServer, topic: str, values: list[bytes]) -> None:
    admin = AdminClient({"bootstrap.servers": server.bootstrap_servers})
    ensure_topics(admin, [TopicSpec(topic, 1)])
    producer = Producer({"bootstrap.servers": server.bootstrap_servers})
    for value in values:
        producer.produce(topic, value)
    assert producer.flush(30) == 0


def until(read: Callable[[], Any], accept: Callable[[Any], bool], timeout: float = 60.0) -> Any:
    """Poll an answer until it shows what the test waits for (the API applies Kafka records
    asynchronously); the last answer is returned either way, for the assertion."""
    deadline = time.monotonic() + timeout
    answer = read()
    while not accept(answer) and time.monotonic() < deadline:
        time.sleep(0.3)
        answer = read()
    return answer


def incident_report(sensor_id: str, end: datetime | None) -> bytes:
    return EventCodec(INCIDENT).encode(
        {
            "incident_id": "SYN-INC-TEST",
            "sensor_id": sensor_id,
            "start_time": START,
            "end_time": end,
            "severity": "MAJOR",
            "affected_sensors": [sensor_id],
            "source": "synthetic",
            "is_synthetic": True,
        }
    )
