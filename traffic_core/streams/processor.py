"""5-minute aggregates of the readings stream on Quix Streams, exactly once.

readings topic ─► classify ─► late gate ─┬─► rejects ─────────────────────────► DLQ topic
 (Avro/JSON bytes) (lake rules) (state)  └─► tumbling 5-min window per sensor ─► aggregates topic
                                              (event time, grace, state)          (Avro, key sensor)

Exactly once comes from Quix's "exactly-once" guarantee: the state stores' changelog records,
the aggregates, the DLQ records and the input offsets of one checkpoint are one Kafka
transaction, so a `read_committed` consumer sees each (sensor, window) once whatever instance
was killed where. The instances of one consumer group split the readings partitions; state
moves with a partition through its changelog topics.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from quixstreams import Application, message_context
from quixstreams.kafka.configuration import ConnectionConfig
from quixstreams.models.serializers import SerializationContext, Serializer

from traffic_core.events import (
    AGGREGATE,
    DLQ_MAX_RECORD_BYTES,
    DlqRecord,
    EventCodec,
    RawMessage,
    Reason,
    Rejection,
    ValidationConfig,
)
from traffic_core.ingestion.ranges import dlq_record_budget
from traffic_core.kafka.client_config import kafka_client_config
from traffic_core.kafka.topics import TRAFFIC_AGGREGATES, TRAFFIC_EVENTS, TRAFFIC_EVENTS_DLQ
from traffic_core.streams.classify import Reading, ReadingClassifier
from traffic_core.streams.metrics import GroupPoller, StreamMetrics
from traffic_core.streams.settings import DEFAULT_GROUP
from traffic_core.streams.windowing import (
    WINDOW_MS,
    ClosedWindow,
    LateGate,
    add_reading,
    aggregate_record,
    open_window,
)

LOG = logging.getLogger("traffic_core.streams.processor")

CONSUMER_HEADER = "dlq.consumer.group"
"""Added to the lake writers' DLQ headers: both reject the same bad message, each once."""


@dataclass(frozen=True)
class ProcessorSettings:
    bootstrap_servers: str
    state_dir: Path
    events_topic: str = TRAFFIC_EVENTS
    aggregates_topic: str = TRAFFIC_AGGREGATES
    dlq_topic: str = TRAFFIC_EVENTS_DLQ
    group_id: str = DEFAULT_GROUP
    instance_id: str = field(default_factory=socket.gethostname)
    """Names this instance's state folder and transactional id: a restart with the same id
    reuses its local state and fences (aborts) the transaction its killed self left open."""
    grace_ms: int = 300_000
    commit_interval: float = 1.0
    transaction_timeout_ms: int = 15_000
    session_timeout_ms: int = 10_000
    dlq_max_record_bytes: int = DLQ_MAX_RECORD_BYTES


class AggregateSerializer(Serializer):
    """Aggregate records as Confluent-framed Avro through the platform's codec."""

    def __init__(self) -> None:
        self.codec = EventCodec(AGGREGATE)

    def __call__(self, value: dict[str, Any], ctx: SerializationContext) -> bytes:
        return self.codec.encode(value)


class DlqValueSerializer(Serializer):
    """A DLQ record's value as built by `Rejection.to_dlq_record` (the original bytes)."""

    def __call__(self, value: DlqRecord, ctx: SerializationContext) -> bytes | None:  # type: ignore[override]
        return value.value


class StreamProcessor:
    """One instance of the aggregation application; `run()` until SIGTERM/SIGINT or `stop()`."""

    def __init__(
        self,
        settings: ProcessorSettings,
        validation: ValidationConfig,
        metrics: StreamMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or StreamMetrics()
        self.state_dir = settings.state_dir / settings.instance_id
        self.classifier = ReadingClassifier(validation)
        # As the stream principal, like every Kafka client: plaintext or SASL_SSL by the switch.
        self.connection = kafka_client_config(settings.bootstrap_servers, "traffic-stream")
        self.app = Application(
            broker_address=ConnectionConfig.from_librdkafka_dict(self.connection),
            consumer_group=settings.group_id,
            processing_guarantee="exactly-once",
            auto_offset_reset="earliest",
            commit_interval=settings.commit_interval,
            state_dir=self.state_dir,
            loglevel=None,
            producer_extra_config={
                "transactional.id": f"{settings.group_id}.{settings.instance_id}",
                "transaction.timeout.ms": settings.transaction_timeout_ms,
                "linger.ms": 5,
                "compression.type": "lz4",
            },
            consumer_extra_config={
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": max(settings.session_timeout_ms // 6, 500),
                "isolation.level": "read_committed",
                "client.id": f"stream-{settings.instance_id}",
            },
        )
        self._dlq_budget = dlq_record_budget(
            AdminClient(self.connection),
            settings.dlq_topic,
            settings.dlq_max_record_bytes,
        )
        self._build()

    def _build(self) -> None:
        s = self.settings
        app = self.app
        events = app.topic(s.events_topic, key_deserializer="bytes", value_deserializer="bytes")
        aggregates = app.topic(
            s.aggregates_topic, key_serializer="bytes", value_serializer=AggregateSerializer()
        )
        dlq = app.topic(s.dlq_topic, key_serializer="bytes", value_serializer=DlqValueSerializer())

        classified = app.dataframe(events).apply(self._classify, metadata=True)
        gated = classified.apply(LateGate(s.grace_ms), stateful=True, metadata=True)

        rejects = gated.filter(lambda item: isinstance(item, Rejection))
        rejects = rejects.apply(self._dlq_record)
        rejects = rejects.set_headers(lambda record, _key, _ts, _headers: record.headers)
        rejects.to_topic(dlq, key=lambda record: record.key)

        readings = gated.filter(lambda item: isinstance(item, Reading))
        readings = readings.set_timestamp(lambda reading, _key, _ts, _headers: reading.event_ms)
        windows = readings.tumbling_window(
            duration_ms=WINDOW_MS, grace_ms=s.grace_ms, name="speed_5min", on_late=self._on_late
        )
        closed = windows.reduce(reducer=self._add, initializer=self._open).final("key")
        closed.apply(self._aggregate, metadata=True).to_topic(aggregates)

    # -- steps -----------------------------------------------------------------------------

    def _classify(
        self, value: bytes | None, key: bytes | None, _timestamp: int, _headers: Any
    ) -> Reading | Rejection:
        ctx = message_context()
        return self.classifier(RawMessage(value, key, ctx.topic, ctx.partition, ctx.offset))

    def _dlq_record(self, rejection: Rejection) -> DlqRecord:
        self.metrics.rejected.labels(rejection.reason.value).inc()
        if rejection.reason is Reason.LATE_READING:
            self.metrics.late.inc()
        record = rejection.to_dlq_record(max_record_bytes=self._dlq_budget)
        consumer = (CONSUMER_HEADER, self.settings.group_id.encode())
        return DlqRecord(record.key, record.value, [*record.headers, consumer])

    def _open(self, reading: Reading) -> Any:
        self.metrics.readings.inc()
        return open_window(reading)

    def _add(self, window: Any, reading: Reading) -> Any:
        self.metrics.readings.inc()
        return add_reading(window, reading)

    def _aggregate(
        self, closed: ClosedWindow, key: bytes, _timestamp: int, _headers: Any
    ) -> dict[str, Any]:
        record = aggregate_record(closed, key.decode(), time.time_ns() // 1_000_000)
        self.metrics.windows.inc()
        self.metrics.last_window_end.set(closed["end"] / 1000)
        return record

    def _on_late(
        self,
        value: Any,
        key: Any,
        timestamp_ms: int,
        late_by_ms: int,
        start: int,
        end: int,
        store_name: str,
        topic: str,
        partition: int,
        offset: int,
    ) -> bool:
        """Never expected: `LateGate` takes late readings out before the window."""
        LOG.error(
            "a late reading reached the window and was dropped",
            extra={
                "key": repr(key),
                "event_ms": timestamp_ms,
                "window_start": start,
                "topic": topic,
                "partition": partition,
                "offset": offset,
            },
        )
        return False

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> None:
        poller = GroupPoller(
            self.metrics,
            self.connection,
            self.settings.group_id,
            self.settings.events_topic,
            self.state_dir,
        )
        poller.start()
        self._time_commits()
        try:
            self.app.run()
        finally:
            poller.stop()

    def stop(self) -> None:
        self.app.stop()

    def _time_commits(self) -> None:
        """Observe each checkpoint commit. Quix has no public hook for it, so the processing
        context's commit method is wrapped; without it the histogram stays empty."""
        context = getattr(self.app, "_processing_context", None)
        if context is None or not hasattr(context, "commit_checkpoint"):
            LOG.warning("checkpoint commits are not timed (no processing context)")
            return
        commit = context.commit_checkpoint
        histogram = self.metrics.commit_seconds

        def timed(force: bool = False, revoking: bool = False) -> None:
            checkpoint = context.checkpoint
            committing = (force or checkpoint.expired()) and not checkpoint.empty()
            started = time.perf_counter()
            commit(force=force, revoking=revoking)
            if committing:
                histogram.observe(time.perf_counter() - started)

        context.commit_checkpoint = timed
