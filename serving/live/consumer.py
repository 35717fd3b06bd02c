"""Keeps a `LiveWindows` current from the readings topic, rebuilding it from Kafka at each start.

Every API replica needs the whole stream, so the consumer assigns itself all partitions instead
of sharing them through group membership. It reads under a consumer group id of its own
replica and commits the positions it has applied (never used to resume), so Kafka's own tools
show each replica's lag (`kafka-consumer-groups.sh --describe --group traffic-api-live-...`).
At start it seeks each partition back by time to the last `rebuild_hours` (Kafka timestamps
are event times, see traffic_core.ingestion.producer), reads up to the end offsets seen at
start, closes
the windows that are due and only then reports ready.
Decoding and validation are ingestion's (columnar fast path, message by message for odd
batches), so the API sees what the lake stores; a bad record is counted and skipped.

`TopicFollower` is that machinery without the readings: the incident and weather feeds
(`serving.live.context_consumer`) are followed the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from serving.live.state import LiveWindows, ReadingOrigin
from traffic_core.events import DecodeError, EventCodec, Reason, ValidationConfig, check_reading
from traffic_core.events.bulk import decode_readings_columnar, validate_columns
from traffic_core.events.codec import Record
from traffic_core.kafka.client_config import kafka_client_config
from traffic_core.kafka.messages import offset_of, partition_of
from traffic_core.kafka.offsets import list_offsets
from traffic_core.lake import ingest_id_list

log = logging.getLogger(__name__)

OnClose = Callable[[list[pd.Timestamp]], None]
T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_CONNECTION_PREFIXES = ("security.", "sasl.", "ssl.", "socket.", "client.dns")
"""Overrides the admin client shares with the consumer (how to reach and talk to brokers)."""


class TopicFollower:
    """Background thread reading every partition of `topic` from `rebuild_hours` back (inf:
    from the earliest offset) and then live; `ready` once the rebuild caught up. Subclasses
    say what a batch of messages does (`_apply`) and what happens once caught up."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        rebuild_hours: float,
        client_config: Mapping[str, Any] | None = None,
        batch_size: int = 10_000,
        poll_timeout: float = 0.1,
        retry_interval: float = 0.5,
        group_id: str | None = None,
        client_id: str = "traffic-api-live",
    ) -> None:
        self.topic = topic
        self.group_id = group_id or f"{client_id}-{uuid.uuid4().hex[:12]}"
        self.client_id = client_id
        self.rebuild_hours = rebuild_hours
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.retry_interval = retry_interval
        overrides = dict(client_config or {})
        connection = kafka_client_config(bootstrap_servers, "traffic-api")
        self._consumer_config = {
            **connection,
            "group.id": self.group_id,  # for committed positions only: assign(), never joined
            "client.id": client_id,
            "enable.auto.commit": True,  # what _step stored, every 5 s and at close
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",  # a rebuild start deleted by retention meanwhile
            "fetch.wait.max.ms": 20,  # a closing reading must reach the state quickly
            **overrides,
        }
        self._admin_config = {
            **connection,
            **{k: v for k, v in overrides.items() if k.startswith(_CONNECTION_PREFIXES)},
        }
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()
        self._end_at_start: dict[int, int] = {}
        self._position: dict[int, int] = {}
        self._high: dict[int, int] = {}
        self._lag = 0
        self.messages = 0
        self.bad_messages = 0
        self._rejected: Counter[str] = Counter()
        self._rejected_lock = threading.Lock()
        self.kafka_errors = 0
        self.callback_errors = 0
        self.batch_errors = 0
        self.rebuild_messages = 0
        self.rebuild_seconds: float | None = None
        self.failure: BaseException | None = None

    # Lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread (no-op while it runs); it rebuilds, then follows the topic."""
        with self._lifecycle:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._ready.clear()
            self._thread = threading.Thread(target=self._run, name=self.client_id, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and join the thread (no-op when not running); the consumer is closed."""
        with self._lifecycle:
            thread = self._thread
            self._stop.set()
            if thread is not None:
                thread.join(timeout)
                if thread.is_alive():
                    log.warning("live consumer did not stop within %.1fs", timeout)

    @property
    def ready(self) -> bool:
        """The state holds everything the topic had at start and follows it live."""
        return self._ready.is_set()

    @property
    def ready_event(self) -> threading.Event:
        return self._ready

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def lag(self) -> int:
        """Messages in the topic not yet read (end offsets as of the latest fetch)."""
        return self._lag

    def rejected(self) -> dict[str, int]:
        """Bad records skipped so far, per validation reason (UNDECODABLE, NAN_SPEED, ...)."""
        with self._rejected_lock:
            return dict(self._rejected)

    def _reject(self, reasons: Iterable[Reason]) -> None:
        with self._rejected_lock:
            before = self._rejected.total()
            self._rejected.update(reason.value for reason in reasons)
            self.bad_messages += self._rejected.total() - before

    def stats(self) -> dict[str, int | float | None]:
        """Plain counters for the metrics exporter."""
        return {
            "messages": self.messages,
            "bad_messages": self.bad_messages,
            "kafka_errors": self.kafka_errors,
            "callback_errors": self.callback_errors,
            "batch_errors": self.batch_errors,
            "rebuild_messages": self.rebuild_messages,
            "rebuild_seconds": self.rebuild_seconds,
            "lag": self._lag,
            "ready": int(self.ready),
        }

    # Thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            consumer = Consumer(self._consumer_config)
        except Exception as exc:  # a bad configuration: nothing will ever be read
            log.exception("live consumer cannot be created")
            self.failure = exc
            return
        try:
            if self._rebuild(consumer):
                while not self._stop.is_set():
                    self._step(consumer, close=True)
        except Exception as exc:
            log.exception("live consumer stopped by an unexpected error")
            self.failure = exc
        finally:
            self._ready.clear()
            consumer.close()

    def _rebuild(self, consumer: Consumer) -> bool:
        """Seek every partition back by time and read up to the end offsets seen now; False if
        stopped first."""
        started = time.monotonic()
        partitions = self._retry("topic metadata", lambda: self._partitions(consumer))
        if partitions is None:
            return False
        admin = AdminClient(self._admin_config)
        tps = [TopicPartition(self.topic, p) for p in partitions]
        newest = self._retry(
            "newest timestamps", lambda: list_offsets(admin, tps, OffsetSpec.max_timestamp())
        )
        ends = self._retry("end offsets", lambda: list_offsets(admin, tps, OffsetSpec.latest()))
        if newest is None or ends is None:
            return False
        # Per partition, so a stray wall-clock timestamp or a stalled partition only moves its
        # own start. +1 ms: a reading stamped exactly rebuild_hours before the newest one starts
        # the window just outside the span (timestamps are window starts).
        wanted: dict[int, OffsetSpec] = {}
        for p, info in newest.items():
            if info.offset < 0 or info.timestamp < 0:
                continue
            wanted[p] = (
                OffsetSpec.earliest()
                if math.isinf(self.rebuild_hours)
                else OffsetSpec.for_timestamp(
                    info.timestamp - round(self.rebuild_hours * 3_600_000) + 1
                )
            )
        found = self._retry(
            "offsets by time",
            lambda: list_offsets(admin, [TopicPartition(self.topic, p) for p in wanted], wanted),
        )
        if found is None:
            return False
        self._end_at_start = {p: info.offset for p, info in ends.items()}
        starts = {p: self._end_at_start[p] for p in partitions}
        starts.update({p: info.offset for p, info in found.items() if info.offset >= 0})
        self._position = dict(starts)
        self._high = dict(self._end_at_start)
        consumer.assign([TopicPartition(self.topic, p, o) for p, o in starts.items()])
        log.info("live rebuild of %s from offsets %s to %s", self.topic, starts, self._end_at_start)
        while not self._caught_up():
            if self._stop.is_set():
                return False
            self.rebuild_messages += self._step(consumer, close=False)
        self._before_ready()
        self.rebuild_seconds = time.monotonic() - started
        self._ready.set()
        log.info(
            "%s rebuilt from %d messages in %.2fs",
            self.topic,
            self.rebuild_messages,
            self.rebuild_seconds,
        )
        self._after_ready()
        return True

    def _before_ready(self) -> None:
        """Caught up with the topic as it was at start; `ready` is set next."""

    def _after_ready(self) -> None:
        """`ready` has just been set."""

    def _partitions(self, consumer: Consumer) -> list[int]:
        """Partition ids of the topic; raises while it does not exist (yet)."""
        metadata = consumer.list_topics(self.topic, timeout=self.retry_interval * 4)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            reason = "unknown" if topic is None else topic.error or "no partitions"
            raise LookupError(f"topic {self.topic!r} not available: {reason}")
        return sorted(topic.partitions)

    def _retry(self, what: str, attempt: Callable[[], T]) -> T | None:
        """Call until it succeeds (transient broker or topic trouble) or stop is asked."""
        failures = 0
        while not self._stop.is_set():
            try:
                return attempt()
            except (KafkaException, LookupError) as exc:
                failures += 1
                level = logging.WARNING if failures % 60 == 1 else logging.DEBUG  # not every 0.5 s
                log.log(level, "live consumer waiting for %s (try %d): %s", what, failures, exc)
                self._stop.wait(self.retry_interval)
        return None

    def _caught_up(self) -> bool:
        return all(self._position[p] >= end for p, end in self._end_at_start.items())

    def _step(self, consumer: Consumer, close: bool) -> int:
        """Read what has arrived (waiting up to poll_timeout for the first message), apply it;
        returns how many messages were read."""
        try:
            batch = consumer.consume(self.batch_size, timeout=0)
            if not batch:
                batch = consumer.consume(1, timeout=self.poll_timeout)
                if batch:
                    batch += consumer.consume(self.batch_size - 1, timeout=0)
        except KafkaException as exc:
            self.kafka_errors += 1
            log.warning("live consumer: %s", exc)
            self._stop.wait(self.retry_interval)
            return 0
        messages = self._without_events(batch) if any(map(Message.error, batch)) else batch
        if messages:
            self._apply(messages, close)
            self._store_positions(consumer, {partition_of(m) for m in messages})
        self._update_lag(consumer)
        return len(messages)

    def _store_positions(self, consumer: Consumer, partitions: set[int]) -> None:
        """Mark what was applied for the next automatic commit (monitoring only)."""
        offsets = [TopicPartition(self.topic, p, self._position[p]) for p in partitions]
        try:
            consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:  # lag reporting is not worth stopping the stream for
            log.debug("live consumer: positions not stored: %s", exc)

    def _without_events(self, batch: list[Message]) -> list[Message]:
        """Messages of a batch holding error events: end-of-partition moves the position, other
        errors are logged (librdkafka retries them itself)."""
        kept = []
        for message in batch:
            error = message.error()
            if error is None:
                kept.append(message)
            elif error.code() == KafkaError._PARTITION_EOF:
                partition, offset = partition_of(message), offset_of(message)
                self._position[partition] = max(self._position.get(partition, 0), offset)
            else:
                self.kafka_errors += 1
                log.warning("live consumer: %s", error)
        return kept

    def _apply(self, messages: list[Message], close: bool) -> None:
        """Count the messages, move the positions past them and apply them (`_use`)."""
        self.messages += len(messages)
        for message in messages:  # offsets rise within a partition: the last one wins
            self._position[partition_of(message)] = offset_of(message) + 1
        self._use(messages, close)

    def _use(self, messages: list[Message], close: bool) -> None:
        raise NotImplementedError

    def _checked(
        self,
        value: bytes | None,
        codec: EventCodec,
        max_bytes: int,
        check: Callable[[Record], tuple[Reason, str] | None],
    ) -> Record | None:
        """One message decoded by `codec` and passed by `check`; None (counted by reason) if
        not: no bad record ever stops the stream."""
        try:
            if not value:
                raise DecodeError(Reason.UNDECODABLE, "empty message value")
            if len(value) > max_bytes:
                raise DecodeError(Reason.OVERSIZED_MESSAGE, f"{len(value)} bytes")
            record = codec.decode_any(value)
        except DecodeError as exc:
            self._reject([exc.reason])
            return None
        except Exception:  # a decoder failure we did not foresee: this record's, not the batch's
            self._reject([Reason.UNDECODABLE])
            return None
        if problem := check(record):
            self._reject([problem[0]])
            return None
        return record

    def _update_lag(self, consumer: Consumer) -> None:
        """From the end offsets librdkafka caches with each fetch: no broker round trip."""
        for partition in self._position:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), cached=True
            )
            if high >= 0:
                self._high[partition] = high
        self._lag = sum(max(self._high[p] - pos, 0) for p, pos in self._position.items())


class LiveConsumer(TopicFollower):
    """Feeds `state` (the 5-minute windows) from the readings topic; `on_close` gets the
    windows each batch closed."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        state: LiveWindows,
        on_close: OnClose | None = None,
        *,
        rebuild_hours: float | None = None,
        validation: ValidationConfig | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            bootstrap_servers,
            topic,
            rebuild_hours=state.hours if rebuild_hours is None else rebuild_hours,
            **options,
        )
        self.state = state
        self.on_close = on_close
        # Resends replace what they resend (last wins in the state), so no duplicate rejection.
        self.validation = dataclasses.replace(validation or ValidationConfig(), dedup_window=0)
        self._codec = EventCodec()
        self._closed_at_rebuild: list[pd.Timestamp] = []

    def _before_ready(self) -> None:
        self._closed_at_rebuild = self.state.close_due()

    def _after_ready(self) -> None:
        self._notify(self._closed_at_rebuild)

    def _use(self, messages: list[Message], close: bool) -> None:
        try:
            closed = self.state.add(*self._readings(messages), close=close)
        except Exception:  # never let one batch stop the stream
            self.batch_errors += 1
            log.exception(
                "live consumer: a batch of %d messages could not be applied", len(messages)
            )
            return
        self._notify(closed)

    def _readings(
        self, messages: list[Message]
    ) -> tuple[pa.Array | np.ndarray, np.ndarray, np.ndarray, np.ndarray, ReadingOrigin]:
        """(sensor ids, event times in epoch ms, speeds with NaN for null, synthetic flags,
        origins) of the valid readings."""
        now = datetime.now(UTC)
        values = list(map(Message.value, messages))
        partitions = np.fromiter(map(Message.partition, messages), np.int32, len(messages))
        offsets = np.fromiter(map(Message.offset, messages), np.int64, len(messages))
        columns = decode_readings_columnar(values, self.validation.max_message_bytes)
        if columns is not None:
            verdict = validate_columns(columns, self.validation, now)
            self._reject(reason for _, reason, _ in verdict.rejected)
            if verdict.rejected:
                rows = np.flatnonzero(verdict.accepted)
                taken = pa.array(rows)
                return (
                    columns.sensor_id.take(taken),
                    columns.event_time[rows],
                    columns.speed_mph[rows],
                    columns.is_synthetic[rows],
                    ReadingOrigin(columns.ingest_id.take(taken), partitions[rows], offsets[rows]),
                )
            return (
                columns.sensor_id,
                columns.event_time,
                columns.speed_mph,
                columns.is_synthetic,
                ReadingOrigin(columns.ingest_id, partitions, offsets),
            )
        decoded = [(i, self._one(v, now)) for i, v in enumerate(values)]
        kept = [i for i, r in decoded if r is not None]
        records = [r for _, r in decoded if r is not None]
        return (
            np.array([r["sensor_id"] for r in records], dtype=object),
            np.array([(r["event_time"] - _EPOCH) // _MS for r in records], dtype=np.int64),
            np.array([np.nan if r["speed_mph"] is None else r["speed_mph"] for r in records]),
            np.array([r["is_synthetic"] for r in records], dtype=bool),
            ReadingOrigin([r["ingest_id"] for r in records], partitions[kept], offsets[kept]),
        )

    def _one(self, value: bytes | None, now: datetime) -> Record | None:
        """One message by the codec and the validation rules; None (counted) if rejected."""
        return self._checked(
            value,
            self._codec,
            self.validation.max_message_bytes,
            lambda record: check_reading(record, self.validation, now),
        )

    def _notify(self, closed: list[pd.Timestamp]) -> None:
        if not closed:
            return
        log.info(
            "windows closed",
            extra={
                "topic": self.topic,
                "windows": [
                    {
                        "window_start": w.isoformat(),
                        "ingest_ids": ingest_id_list(self.state.window_ingest_ids(w)),
                    }
                    for w in closed
                ],
            },
        )
        if self.on_close is None:
            return
        try:
            self.on_close(closed)
        except Exception:
            self.callback_errors += 1
            log.exception("live consumer: on_close failed for windows %s", closed)
