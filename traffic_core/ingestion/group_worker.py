"""Scale-out ingestion: `python -m traffic_core.ingestion.group_worker` workers of one
consumer group.

The workers of a group split the events topic's partitions and write the same immutable range
files as the Dagster-planned ingestion (`traffic_core.ingestion.ranges`), with the same
classification.
Each worker holds what it fetched per partition as one contiguous batch and flushes a batch
when it is big or old enough: classify it, write its valid rows durably, then in ONE Kafka
transaction send its rejects to the dead-letter topic and commit offset last+1 for the group.

- Lake, exactly once: a file named by its range is the ledger. A worker that gets a partition
  reads the ranges the lake holds for it and never writes a range overlapping them (a killed
  worker may have written files without committing), so only the unstored part is written.
- DLQ, exactly once: rejects and the offset commit are atomic. Re-read messages whose rows are
  already stored still send their rejects, because the transaction that would have sent them
  was never committed.
- Rebalances: revoked partitions are flushed and committed before they move; lost ones are
  dropped (their next owner re-reads them from the last commit).

The assignor is cooperative-sticky: a worker joining or leaving moves only the partitions that
change owner, while the others keep their batches and keep flowing (the eager default revokes
every partition of every worker at each rebalance).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from traffic_core.events import DLQ_MAX_RECORD_BYTES, Rejection, ValidationConfig
from traffic_core.ingestion.config import add_sensor_catalogue_flag, command_line_rules
from traffic_core.ingestion.group_metrics import IngestMetrics, configure_worker_logging
from traffic_core.ingestion.ranges import (
    classify_range,
    collection_paused,
    dlq_record_budget,
    send_rejects,
    store_classified,
)
from traffic_core.kafka.client_config import kafka_client_config
from traffic_core.kafka.messages import offset_of, partition_of
from traffic_core.kafka.topics import TRAFFIC_EVENTS, TRAFFIC_EVENTS_DLQ
from traffic_core.lake import OffsetRange, ordered_ids, stored_offset_ranges
from traffic_core.lake_storage import LakePath, lake_path
from traffic_core.settings import ingestion_settings, kafka_settings, platform_settings

DEFAULT_GROUP = "traffic-lake-writers"
LOG = logging.getLogger("traffic_core.ingestion.group_worker")


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerSettings:
    bootstrap_servers: str
    lake_root: LakePath
    topic: str = TRAFFIC_EVENTS
    dlq_topic: str = TRAFFIC_EVENTS_DLQ
    group_id: str = DEFAULT_GROUP
    worker_id: str = field(default_factory=default_worker_id)
    flush_messages: int = 50_000
    """A partition's batch is flushed once it holds this many messages..."""
    flush_seconds: float = 30.0
    """...or once its first message has waited this long (longer: fewer, bigger files)."""
    session_timeout_ms: int = 10_000
    """How long a silent (killed) worker keeps its partitions before the group moves them."""
    transaction_timeout_ms: int = 30_000
    dlq_max_record_bytes: int = DLQ_MAX_RECORD_BYTES
    """Larger rejects go to the DLQ as reference records (capped by the DLQ topic's limit)."""


def split_by_stored(
    offsets: OffsetRange, stored: Iterable[OffsetRange]
) -> list[tuple[OffsetRange, bool]]:
    """offsets cut into consecutive parts, each wholly held by the lake (True) or not at all."""
    parts: list[tuple[OffsetRange, bool]] = []
    cursor = offsets.first
    for held in sorted(stored):
        if cursor > offsets.last:
            break
        if held.last < cursor or held.first > offsets.last:
            continue
        if held.first > cursor:
            parts.append((_sub(offsets, cursor, held.first - 1), False))
        end = min(held.last, offsets.last)
        parts.append((_sub(offsets, max(cursor, held.first), end), True))
        cursor = end + 1
    if cursor <= offsets.last:
        parts.append((_sub(offsets, cursor, offsets.last), False))
    return parts


def _sub(offsets: OffsetRange, first: int, last: int) -> OffsetRange:
    return OffsetRange(offsets.topic, offsets.partition, first, last)


@dataclass
class _Batch:
    messages: list[Message]
    started: float = field(default_factory=time.monotonic)

    @property
    def offsets(self) -> list[int]:
        return [offset_of(m) for m in self.messages]


class GroupIngestWorker:
    """One member of the ingestion consumer group; `run()` until `stop()` (or a signal)."""

    def __init__(
        self,
        settings: WorkerSettings,
        validation: ValidationConfig | None = None,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.validation = validation or ValidationConfig()
        self.metrics = metrics or IngestMetrics()
        self._batches: dict[int, _Batch] = {}
        self._stored: dict[int, list[OffsetRange]] = {}
        self._stopping = False
        self._lag_due = 0.0
        connection = kafka_client_config(settings.bootstrap_servers, "traffic-lake-writer")
        self.consumer = Consumer(
            {
                **connection,
                "group.id": settings.group_id,
                "client.id": f"lake-writer-{settings.worker_id}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": max(settings.session_timeout_ms // 6, 500),
                "isolation.level": "read_committed",
                "max.partition.fetch.bytes": 16 << 20,
                "fetch.wait.max.ms": 100,
                "logger": LOG,
            }
        )
        self.dlq = Producer(
            {
                **connection,
                # One id per worker: a restarted worker of the same id fences its old self.
                "transactional.id": f"{settings.group_id}.{settings.worker_id}",
                "transaction.timeout.ms": settings.transaction_timeout_ms,
                "linger.ms": 5,
                "compression.type": "lz4",
                "logger": LOG,
            }
        )
        # The broker creates its transaction log on first use, which can take a while.
        self.dlq.init_transactions(120)
        self._dlq_budget = dlq_record_budget(
            AdminClient(connection),
            settings.dlq_topic,
            settings.dlq_max_record_bytes,
        )

    @property
    def held(self) -> dict[int, int]:
        """Messages fetched but not yet stored and committed, per partition."""
        return {p: len(b.messages) for p, b in self._batches.items()}

    # -- lifecycle -------------------------------------------------------------------------

    def subscribe(self) -> None:
        self.consumer.subscribe(
            [self.settings.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        LOG.info("joining group", extra={"group": self.settings.group_id})

    def run(self) -> None:
        self.subscribe()
        try:
            while not self._stopping:
                self.poll()
        finally:
            self.close()

    def stop(self, *_: object) -> None:
        """Ask `run` to flush, commit and leave the group (safe from a signal handler)."""
        self._stopping = True

    def close(self) -> None:
        """Flush and commit every batch, then leave the group so its partitions move now."""
        self.flush(list(self._batches))
        self.consumer.close()
        LOG.info("left group", extra={"group": self.settings.group_id})

    # -- the loop --------------------------------------------------------------------------

    def poll(self, timeout: float = 0.5) -> None:
        """Fetch what is there, add it to the partitions' batches, flush the due ones."""
        messages = self.consumer.consume(num_messages=10_000, timeout=timeout)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                if error.code() != KafkaError._PARTITION_EOF:
                    LOG.warning("consumer error", extra={"error": str(error)})
                continue
            partition = partition_of(message)
            batch = self._batches.get(partition)
            if batch is None:
                self._batches[partition] = _Batch([message])
            else:
                batch.messages.append(message)
        now = time.monotonic()
        due = [
            p
            for p, b in self._batches.items()
            if len(b.messages) >= self.settings.flush_messages
            or now - b.started >= self.settings.flush_seconds
        ]
        self.flush(due)
        if now >= self._lag_due:
            self._update_lag()
            self._lag_due = now + 1.0

    def flush(self, partitions: Iterable[int]) -> None:
        """Store the batches of these partitions and commit them, with their rejects, at once."""
        batches = {p: self._batches.pop(p) for p in list(partitions) if p in self._batches}
        if not batches:
            return
        started = time.perf_counter()
        rejects: list[Rejection] = []
        with collection_paused():
            for partition, batch in batches.items():
                rejects += self._store_batch(partition, batch)
        next_offsets = {p: offset_of(b.messages[-1]) + 1 for p, b in batches.items()}
        if self._commit(rejects, next_offsets):
            for partition, next_offset in next_offsets.items():
                held = self._stored.get(partition, [])
                self._stored[partition] = [r for r in held if r.last >= next_offset]
        else:
            self._rewind(batches)
        self.metrics.flush_seconds.observe(time.perf_counter() - started)

    def _store_batch(self, partition: int, batch: _Batch) -> list[Rejection]:
        """Write the batch's offsets the lake does not hold yet; return all its rejects."""
        topic = self.settings.topic
        offsets = batch.offsets
        whole = OffsetRange(topic, partition, offsets[0], offsets[-1])
        now = datetime.now(UTC)
        rejects: list[Rejection] = []
        written, skipped = [], []
        ingest_ids: set[str | None] = set()
        for part, stored in split_by_stored(whole, self._stored.get(partition, [])):
            messages = batch.messages[
                bisect_left(offsets, part.first) : bisect_right(offsets, part.last)
            ]
            if not messages:
                continue
            classified = classify_range(messages, part, self.validation, now)
            rejects += classified.rejected
            if stored:
                skipped.append([part.first, part.last])
                self.metrics.skipped.labels(topic).inc(len(messages))
                continue
            outcome = store_classified(self.settings.lake_root, part, classified)
            if outcome.files:
                self._stored.setdefault(partition, []).append(part)
            written.append([part.first, part.last, outcome.accepted])
            ingest_ids.update(*outcome.ingest_ids.values())
            self.metrics.events.labels(topic).inc(outcome.accepted)
            if outcome.with_unknown_fields:
                self.metrics.unknown_fields.labels(topic).inc(outcome.with_unknown_fields)
                LOG.warning(
                    "readings with fields the schema lacks stored (UNKNOWN_FIELD, counted)",
                    extra={
                        "topic": topic,
                        "partition": partition,
                        "first": part.first,
                        "last": part.last,
                        "readings": outcome.with_unknown_fields,
                        "fields": dict(outcome.unknown_fields),
                    },
                )
            self.metrics.files.labels(topic).inc(len(outcome.files))
        LOG.info(
            "batch stored",
            extra={
                "topic": topic,
                "partition": partition,
                "first": whole.first,
                "last": whole.last,
                "written": written,
                "already_stored": skipped,
                "rejected": len(rejects),
                "ingest_ids": ordered_ids(ingest_ids),
            },
        )
        return rejects

    def _commit(self, rejects: list[Rejection], next_offsets: dict[int, int]) -> bool:
        """Rejects to the DLQ and the group's offsets in one transaction; False if aborted."""
        topic = self.settings.topic
        try:
            self.dlq.begin_transaction()
            send_rejects(
                self.dlq,
                self.settings.dlq_topic,
                rejects,
                flush=False,
                max_record_bytes=self._dlq_budget,
            )
            self.dlq.send_offsets_to_transaction(
                [TopicPartition(topic, p, o) for p, o in next_offsets.items()],
                self.consumer.consumer_group_metadata(),
                30,
            )
            self.dlq.commit_transaction(60)
        except KafkaException as exc:
            error = exc.args[0]
            if not error.txn_requires_abort():
                raise
            self.dlq.abort_transaction(60)
            self.metrics.commits.labels("aborted").inc()
            LOG.warning(
                "commit aborted; batches will be re-read",
                extra={"topic": topic, "next_offsets": next_offsets, "error": str(error)},
            )
            return False
        self.metrics.commits.labels("committed").inc()
        self.metrics.last_commit.set_to_current_time()
        for reason, count in Counter(r.reason.value for r in rejects).items():
            self.metrics.rejected.labels(topic, reason).inc(count)
        LOG.info("committed", extra={"topic": topic, "next_offsets": next_offsets})
        return True

    def _rewind(self, batches: dict[int, _Batch]) -> None:
        """After an aborted commit, read the batches of partitions still owned again."""
        owned = {tp.partition for tp in self.consumer.assignment()}
        for partition, batch in batches.items():
            if partition in owned:
                first = offset_of(batch.messages[0])
                self.consumer.seek(TopicPartition(self.settings.topic, partition, first))

    def _update_lag(self) -> None:
        """Lag = high watermark - first offset not yet stored and committed, per partition."""
        assignment = self.consumer.assignment()
        if not assignment:
            return
        for tp in self.consumer.position(assignment):
            _low, high = self.consumer.get_watermark_offsets(tp, cached=True) or (-1, -1)
            batch = self._batches.get(tp.partition)
            start = offset_of(batch.messages[0]) if batch else tp.offset
            if high >= 0 and start >= 0:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - start, 0))

    # -- rebalance callbacks ---------------------------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._stored[tp.partition] = stored_offset_ranges(
                self.settings.lake_root, tp.topic, tp.partition
            )
        self.metrics.rebalances.labels("assigned").inc(len(partitions))
        LOG.info("partitions assigned", extra={"partitions": _numbers(partitions)})

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.flush(tp.partition for tp in partitions)
        self._forget(partitions)
        self.metrics.rebalances.labels("revoked").inc(len(partitions))
        LOG.info("partitions revoked", extra={"partitions": _numbers(partitions)})

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        dropped = sum(
            len(self._batches.pop(tp.partition, _Batch([])).messages) for tp in partitions
        )
        self._forget(partitions)
        self.metrics.rebalances.labels("lost").inc(len(partitions))
        LOG.warning(
            "partitions lost; their batches are dropped and will be re-read",
            extra={"partitions": _numbers(partitions), "dropped_messages": dropped},
        )

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._batches.pop(tp.partition, None)
            self._stored.pop(tp.partition, None)
            with suppress(KeyError):  # no lag was measured for it yet
                self.metrics.lag.remove(tp.topic, str(tp.partition))


def _numbers(partitions: list[TopicPartition]) -> list[int]:
    return sorted(tp.partition for tp in partitions)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    kafka, platform = kafka_settings(), platform_settings()
    parser = argparse.ArgumentParser(
        prog="python -m traffic_core.ingestion.group_worker",
        description="Join the ingestion consumer group and write raw range files to the lake.",
    )
    parser.add_argument("--bootstrap-servers", default=kafka.bootstrap_servers)
    parser.add_argument("--topic", default=TRAFFIC_EVENTS)
    parser.add_argument("--dlq-topic", default=TRAFFIC_EVENTS_DLQ)
    parser.add_argument("--group-id", default=DEFAULT_GROUP)
    parser.add_argument("--worker-id", default=default_worker_id())
    parser.add_argument("--lake-dir", type=lake_path, default=platform.lake_dir)
    parser.add_argument("--flush-messages", type=int, default=WorkerSettings.flush_messages)
    parser.add_argument("--flush-seconds", type=float, default=WorkerSettings.flush_seconds)
    parser.add_argument("--session-timeout-ms", type=int, default=WorkerSettings.session_timeout_ms)
    parser.add_argument("--metrics-port", type=int, default=0, help="0: no metrics endpoint")
    parser.add_argument("--metrics-host", default="127.0.0.1")
    add_sensor_catalogue_flag(parser)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_worker_logging(args.worker_id, args.log_level)
    ingestion = ingestion_settings()
    metrics = IngestMetrics()
    metrics.serve(args.metrics_port, args.metrics_host)
    worker = GroupIngestWorker(
        WorkerSettings(
            bootstrap_servers=args.bootstrap_servers,
            lake_root=args.lake_dir,
            topic=args.topic,
            dlq_topic=args.dlq_topic,
            group_id=args.group_id,
            worker_id=args.worker_id,
            flush_messages=args.flush_messages,
            flush_seconds=args.flush_seconds,
            session_timeout_ms=args.session_timeout_ms,
            dlq_max_record_bytes=ingestion.dlq_max_record_bytes,
        ),
        command_line_rules(args.no_sensor_catalogue, args.lake_dir, ingestion),
        metrics,
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        LOG.info("stopping", extra={"signal": signal.Signals(signum).name})
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run()


if __name__ == "__main__":
    main()
