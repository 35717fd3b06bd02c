"""Pushing new forecasts and alerts: to WebSocket / SSE subscribers in this process and to
Kafka (`traffic-predictions`, `traffic-alerts`) for other services.

Windows close on the live consumer's thread; `Broadcaster.publish` hands each message to the
event loop, where every subscriber has a bounded queue. A subscriber too slow to keep up
loses its oldest messages (counted), never slows the others down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from confluent_kafka import KafkaException, Producer

from serving.publisher_election import PublisherElection
from traffic_core.kafka.client_config import kafka_client_config

log = logging.getLogger(__name__)


class Broadcaster:
    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: set[asyncio.Queue[bytes]] = set()
        self.dropped = 0
        self.published = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def publish(self, kind: str, data: dict[str, Any] | bytes) -> None:
        """Thread-safe: a `{"type": kind, "data": ...}` message encoded once (`data` may be
        JSON already, as forecast batches are), fanned out on the loop."""
        if self._loop is None or not self._queues:
            return
        body = data if isinstance(data, bytes) else orjson.dumps(data)
        data = b'{"type":' + orjson.dumps(kind) + b',"data":' + body + b"}"
        self.published += 1
        self._loop.call_soon_threadsafe(self._fan_out, data)

    def _fan_out(self, data: bytes) -> None:
        for queue in list(self._queues):
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(data)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[bytes]]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(self.queue_size)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)


class KafkaPublisher:
    """Forecast and alert records as JSON, keyed by sensor id (one partition per sensor keeps
    each sensor's records in order), sent only while `election` makes this replica the
    publisher (always, without one)."""

    def __init__(
        self,
        bootstrap_servers: str,
        predictions_topic: str,
        alerts_topic: str,
        election: PublisherElection | None = None,
    ) -> None:
        self.predictions_topic = predictions_topic
        self.alerts_topic = alerts_topic
        self.election = election
        self.errors = 0
        self.withheld = 0
        self._producer = Producer(
            {
                **kafka_client_config(bootstrap_servers, "traffic-api"),
                "client.id": "metr-traffic-api",
                "linger.ms": 5,
                "enable.idempotence": True,
            }
        )

    def _on_delivery(self, error: Any, _message: Any) -> None:
        if error is not None:
            self.errors += 1
            log.warning("forecast record not delivered: %s", error)

    @property
    def leading(self) -> bool:
        return self.election is None or self.election.leading

    @property
    def settled(self) -> bool:
        """Whether this replica knows if it publishes (its first group assignment arrived)."""
        return self.election is None or self.election.settled.is_set()

    def start(self) -> None:
        if self.election is not None:
            self.election.start()

    def send(self, topic: str, records: Iterable[tuple[str, bytes]]) -> None:
        if not self.leading:
            self.withheld += 1
            return
        for key, value in records:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._on_delivery)
            except (BufferError, KafkaException) as error:
                self.errors += 1
                log.warning("forecast record dropped: %s", error)
        self._producer.poll(0)

    def close(self, timeout: float = 10.0) -> None:
        if self.election is not None:
            self.election.close(timeout)
        self._producer.flush(timeout)
