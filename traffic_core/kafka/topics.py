"""The topic layout of the platform and its idempotent creation."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

TRAFFIC_EVENTS = "traffic-events"
TRAFFIC_EVENTS_DLQ = "traffic-events-dlq"
TRAFFIC_AGGREGATES = "traffic-aggregates"
TRAFFIC_PREDICTIONS = "traffic-predictions"
TRAFFIC_ALERTS = "traffic-alerts"
TRAFFIC_INCIDENTS = "traffic-incidents"
WEATHER_OBSERVATIONS = "weather-observations"

DEFAULT_PARTITIONS: dict[str, int] = {
    TRAFFIC_EVENTS: 12,
    TRAFFIC_AGGREGATES: 6,
    TRAFFIC_PREDICTIONS: 6,
    TRAFFIC_ALERTS: 2,
    TRAFFIC_EVENTS_DLQ: 3,
    TRAFFIC_INCIDENTS: 1,
    WEATHER_OBSERVATIONS: 1,
}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int


@dataclass(frozen=True)
class Replication:
    """How many copies of each partition, and how many must hold a write before `acks=all`
    succeeds: with three or more brokers, three copies and two in sync, so one broker may be
    lost without losing a write or refusing one."""

    factor: int = 1
    min_insync: int = 1

    @classmethod
    def for_brokers(cls, brokers: int) -> Replication:
        factor = max(1, min(brokers, 3))
        return cls(factor, 2 if factor >= 3 else 1)

    @property
    def topic_config(self) -> dict[str, str]:
        return {"min.insync.replicas": str(self.min_insync)}


class TopicLayoutError(ValueError):
    """A topic layout override that cannot be applied."""


def parse_partition_overrides(text: str) -> dict[str, int]:
    """Parse 'topic=count,topic=count' (the KAFKA_TOPIC_PARTITIONS format)."""
    overrides: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.partition("=")
        if not sep or not name.strip() or not count.strip().isdigit() or int(count) < 1:
            raise TopicLayoutError(
                f"bad partition override {item!r}: expected 'topic=N' with N >= 1"
            )
        overrides[name.strip()] = int(count)
    return overrides


def topic_layout(overrides: Mapping[str, int] | str = "") -> list[TopicSpec]:
    """The platform's topics: the defaults with any overrides applied."""
    if isinstance(overrides, str):
        overrides = parse_partition_overrides(overrides)
    counts = {**DEFAULT_PARTITIONS, **overrides}
    return [TopicSpec(name, count) for name, count in counts.items()]


def ensure_topics(
    admin: AdminClient,
    layout: list[TopicSpec],
    replication: Replication = Replication(),
    timeout: float = 30.0,
) -> dict[str, str]:
    """Create missing topics and grow under-partitioned ones; never shrink or delete.

    Returns what happened per topic ('created', 'exists', 'grown'), so callers can log it.
    An existing topic keeps its replication.
    """
    existing = admin.list_topics(timeout=timeout).topics
    actions: dict[str, str] = {}
    to_create = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=replication.factor,
            config=replication.topic_config,
        )
        for spec in layout
        if spec.name not in existing
    ]
    to_grow = [
        NewPartitions(spec.name, spec.partitions)
        for spec in layout
        if spec.name in existing and len(existing[spec.name].partitions) < spec.partitions
    ]
    for spec in layout:
        actions[spec.name] = "exists"
    for future_map, verb in (
        (admin.create_topics(to_create, request_timeout=timeout) if to_create else {}, "created"),
        (admin.create_partitions(to_grow, request_timeout=timeout) if to_grow else {}, "grown"),
    ):
        for name, future in future_map.items():
            try:
                future.result()
                actions[name] = verb
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
    _wait_for_metadata(admin, {spec.name: spec.partitions for spec in layout}, timeout)
    return actions


def _wait_for_metadata(admin: AdminClient, wanted: dict[str, int], timeout: float) -> None:
    """Creation is acknowledged before the metadata shows every partition with a leader."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=timeout).topics
        if all(
            name in topics
            and len(topics[name].partitions) >= count
            and all(p.leader >= 0 and p.error is None for p in topics[name].partitions.values())
            for name, count in wanted.items()
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topics not visible in broker metadata after {timeout}s: {sorted(wanted)}")


def describe_partitions(admin: AdminClient, timeout: float = 10.0) -> dict[str, int]:
    """Partition count of every non-internal topic on the broker."""
    topics = admin.list_topics(timeout=timeout).topics
    return {
        name: len(meta.partitions) for name, meta in topics.items() if not name.startswith("__")
    }
