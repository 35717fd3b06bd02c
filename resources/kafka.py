"""Kafka access for assets and sensors."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from dagster import ConfigurableResource

from traffic_core.ingestion.ranges import RANGE_CONSUMER_CONFIG
from traffic_core.kafka.client_config import kafka_client_config
from traffic_core.kafka.topics import (
    TRAFFIC_AGGREGATES,
    TRAFFIC_EVENTS,
    TRAFFIC_EVENTS_DLQ,
    TRAFFIC_INCIDENTS,
    WEATHER_OBSERVATIONS,
)


class KafkaResource(ConfigurableResource):
    """Clients for the platform's broker; callers add their own settings per use."""

    bootstrap_servers: str
    client_id: str = "metr-traffic-dagster"
    events_topic: str = TRAFFIC_EVENTS
    dlq_topic: str = TRAFFIC_EVENTS_DLQ
    aggregates_topic: str = TRAFFIC_AGGREGATES
    incidents_topic: str = TRAFFIC_INCIDENTS
    weather_topic: str = WEATHER_OBSERVATIONS

    def _base(self) -> dict[str, Any]:
        return {
            **kafka_client_config(self.bootstrap_servers, "traffic-lake-writer"),
            "client.id": self.client_id,
        }

    def admin(self) -> AdminClient:
        return AdminClient(self._base())

    def producer(self, **config: Any) -> Producer:
        return Producer({**self._base(), "enable.idempotence": True, **config})

    def consumer(self, group_id: str, **config: Any) -> Consumer:
        """A consumer for reading exact offset ranges (ingestion) or probing offsets; it never
        tails the log, so the range-reading fetch settings suit every use."""
        return Consumer(
            {
                **self._base(),
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                **RANGE_CONSUMER_CONFIG,
                **config,
            }
        )
