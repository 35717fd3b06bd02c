"""Which API replica publishes forecasts and alerts to Kafka.

Every replica computes every window's forecasts (each keeps the whole live state), but
`traffic-predictions` and `traffic-alerts` must get each record once, not once per replica.
Kafka's group coordinator elects the publisher: every replica joins one consumer group on a
one-partition topic, and the member holding partition 0 publishes. Nothing is ever produced to
that topic; the consumer only heart-beats. Cooperative-sticky assignment keeps the publisher
in place when replicas join; one that stops leaves the group (or, killed, misses its heartbeats
for the session timeout) and another takes over. Windows that close during a hand-over are not
published by anyone: consumers of the topics see a gap, never a duplicate.
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from traffic_core.kafka.client_config import kafka_client_config
from traffic_core.kafka.topics import Replication, TopicSpec, ensure_topics
from traffic_core.settings import KafkaSettings

log = logging.getLogger(__name__)

LEADER_PARTITION = 0


class PublisherElection:
    """Membership of the publishers' group, kept by a daemon thread; `leading` is True while
    this replica holds partition 0, `settled` once its first assignment arrived."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        group_id: str,
        session_timeout_ms: int = 6_000,
    ) -> None:
        self.topic = topic
        self.group_id = group_id
        self.leading = False
        self.settled = threading.Event()
        self._bootstrap_servers = bootstrap_servers
        self._session_timeout_ms = session_timeout_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        connection = kafka_client_config(self._bootstrap_servers, "traffic-api")
        replication = Replication.for_brokers(KafkaSettings().brokers)
        ensure_topics(AdminClient(connection), [TopicSpec(self.topic, 1)], replication)
        consumer = Consumer(
            {
                **connection,
                "group.id": self.group_id,
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": self._session_timeout_ms,
                "heartbeat.interval.ms": max(500, self._session_timeout_ms // 6),
                "enable.auto.commit": False,
                "client.id": f"{self.group_id}-member",
            }
        )
        consumer.subscribe(
            [self.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked
        )
        self._thread = threading.Thread(
            target=self._run, args=(consumer,), name="publisher-election", daemon=True
        )
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Leave the group at once, so another replica takes over without waiting out the
        session timeout."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                try:
                    consumer.poll(0.2)  # drives heartbeats and the rebalance callbacks
                except KafkaException as error:
                    log.warning("publisher election: %s", error)
        finally:
            self.leading = False
            consumer.close()

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any(p.partition == LEADER_PARTITION for p in partitions) and not self.leading:
            self.leading = True
            log.info("publishing forecasts and alerts to Kafka (group %s)", self.group_id)
        self.settled.set()

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any(p.partition == LEADER_PARTITION for p in partitions) and self.leading:
            self.leading = False
            log.info("another replica publishes forecasts now (group %s)", self.group_id)
