"""Exactly-once ingestion of Kafka offset ranges into the raw zone of the lake.

Kafka offsets are the ledger: a caller names exact ranges, every message of a range is read,
valid readings are written to one file per (date, range) and rejects to the dead-letter topic.
Only after the files are durable are the offsets committed (for lag monitoring), so a crash at
any point means a rerun of the same ranges, which rewrites the same files.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from tenacity import (
    before_sleep_log,
    retry,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from traffic_core.events import (
    DLQ_MAX_RECORD_BYTES,
    RawMessage,
    ReadingValidator,
    Rejection,
    ValidationConfig,
)
from traffic_core.events.bulk import ColumnarReadings, decode_readings_columnar, validate_columns
from traffic_core.events.context_validation import ContextRules, validate_context
from traffic_core.kafka.messages import offset_of
from traffic_core.kafka.topics import TRAFFIC_EVENTS_DLQ
from traffic_core.lake import RAW_SCHEMA, READINGS, OffsetRange, RawZone, write_raw_range
from traffic_core.lake_storage import LakePath

log = logging.getLogger(__name__)

RANGE_CONSUMER_CONFIG = {
    # Whole ranges are read at once: fetch them in big chunks (librdkafka's default is 1 MiB
    # per partition per fetch).
    "max.partition.fetch.bytes": 16 << 20,
    "fetch.max.bytes": 64 << 20,
    # A range usually ends at the log end, where the broker holds the fetch this long for new
    # data; the next range's fetch waits behind it (default 500 ms per range).
    "fetch.wait.max.ms": 10,
}
"""librdkafka settings for a consumer that `read_range`s one range after another."""


class IngestError(RuntimeError):
    """A range could not be read completely; nothing was committed for it."""


@dataclass
class RangeOutcome:
    offsets: OffsetRange
    accepted: int
    rejected: Counter[str]
    files: dict[date, LakePath]
    ingest_ids: dict[date, Counter[str | None]] = field(default_factory=dict)
    """Stored readings per event date and ingest id (None: sent without one)."""
    unknown_fields: Counter[str] = field(default_factory=Counter)
    """Stored readings' JSON fields the schema lacks, by name (see `ClassifiedRange`)."""
    with_unknown_fields: int = 0


@dataclass
class IngestReport:
    ranges: list[RangeOutcome] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(r.accepted for r in self.ranges)

    @property
    def rejected(self) -> Counter[str]:
        return sum((r.rejected for r in self.ranges), Counter())

    @property
    def messages(self) -> int:
        return sum(r.offsets.count for r in self.ranges)

    def unknown_fields(self) -> tuple[int, Counter[str]]:
        """Stored readings with JSON fields the schema lacks, and those fields by name."""
        names = sum((r.unknown_fields for r in self.ranges), Counter())
        return sum(r.with_unknown_fields for r in self.ranges), names

    def ingest_ids(self, day: date) -> Counter[str | None]:
        """Readings stored for one event date per ingest id, over every range."""
        return sum((r.ingest_ids.get(day, Counter()) for r in self.ranges), Counter())

    def rows_by_date(self) -> dict[date, list[LakePath]]:
        out: dict[date, list[LakePath]] = {}
        for outcome in self.ranges:
            for day, path in outcome.files.items():
                out.setdefault(day, []).append(path)
        return out


def read_range(consumer: Consumer, offsets: OffsetRange, timeout: float = 60.0) -> list[Message]:
    """Every message first..last of one partition, or IngestError if they cannot all be read."""
    consumer.assign([TopicPartition(offsets.topic, offsets.partition, offsets.first)])
    messages: list[Message] = []
    next_offset = offsets.first
    deadline = time.monotonic() + timeout
    try:
        while next_offset <= offsets.last:
            if time.monotonic() > deadline:
                raise IngestError(
                    f"{offsets}: read up to offset {next_offset - 1} only within {timeout:.0f}s"
                )
            batch = consumer.consume(
                num_messages=min(10_000, offsets.last - next_offset + 1), timeout=1.0
            )
            if any(map(Message.error, batch)):  # C-level scan: error events are rare
                batch = _up_to_last(batch, offsets)
            elif batch and offset_of(batch[-1]) > offsets.last:  # offsets rise in a partition
                batch = [m for m in batch if offset_of(m) <= offsets.last]
            if batch:
                messages += batch
                next_offset = offset_of(batch[-1]) + 1
    finally:
        consumer.unassign()
    return messages


@contextmanager
def collection_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a range is read and classified.

    Kafka messages are GC-tracked objects and a range holds up to millions of them, so every
    automatic collection walks them all: a third of ingest's CPU. They form no cycles.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _up_to_last(batch: list[Message], offsets: OffsetRange) -> list[Message]:
    """Messages of a batch that holds error events, in order, until one is past the range.

    End-of-partition events are skipped; any other error fails the range.
    """
    kept = []
    for message in batch:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                continue
            raise IngestError(f"{offsets}: {error}")
        if offset_of(message) > offsets.last:
            break
        kept.append(message)
    return kept


_READINGS = pa.schema([f for f in RAW_SCHEMA if not f.name.startswith("kafka_")])
"""What the message carries; `_with_origin` adds where in Kafka it was read."""


def readings_table(
    records: list[dict], offsets: OffsetRange, kafka_offsets: list[int] | np.ndarray
) -> pa.Table:
    """Decoded readings plus where each came from, in the raw zone's schema."""
    columns = {name: [record[name] for record in records] for name in _READINGS.names}
    return _with_origin(pa.table(columns, schema=_READINGS), offsets, kafka_offsets)


def columnar_table(
    readings: ColumnarReadings,
    rows: np.ndarray,
    offsets: OffsetRange,
    kafka_offsets: np.ndarray,
) -> pa.Table:
    """`readings_table` of the given rows, straight from the decoded columns."""
    taken = pa.array(rows, pa.int64())
    columns = [
        readings.sensor_id.take(taken),
        pa.array(readings.event_time[rows], _READINGS.field("event_time").type),
        pa.array(readings.speed_mph[rows], mask=readings.speed_null[rows]),
        pa.array(readings.volume[rows], pa.int32(), mask=readings.volume_null[rows]),
        pa.array(readings.occupancy[rows], mask=readings.occupancy_null[rows]),
        readings.source.take(taken),
        pa.array(readings.is_synthetic[rows]),
        readings.ingest_id.take(taken),
    ]
    return _with_origin(pa.table(columns, schema=_READINGS), offsets, kafka_offsets)


def _with_origin(
    table: pa.Table, offsets: OffsetRange, kafka_offsets: list[int] | np.ndarray
) -> pa.Table:
    n = table.num_rows
    origin = {
        "kafka_topic": pa.repeat(offsets.topic, n),
        "kafka_partition": pa.array(np.full(n, offsets.partition, np.int32)),
        "kafka_offset": pa.array(np.asarray(kafka_offsets, np.int64)),
    }
    for name, column in origin.items():
        table = table.append_column(RAW_SCHEMA.field(name), column)
    return table


@dataclass
class ClassifiedRange:
    """One range split into the rows for the lake, the rejects and their counts per reason."""

    table: pa.Table
    rejected: list[Rejection]
    counts: Counter[str]
    with_unknown_fields: int = 0
    """Accepted JSON messages with fields the schema lacks (policy "count")."""
    unknown_fields: Counter[str] = field(default_factory=Counter)


def classify_range(
    messages: list[Message], offsets: OffsetRange, config: ValidationConfig, now: datetime
) -> ClassifiedRange:
    """Columnar decode and validation when the whole range allows it, else message by message.

    Either way the outcome is that of a fresh `ReadingValidator` over the range, so it never
    depends on what ran before.
    """
    values = list(map(Message.value, messages))
    readings = decode_readings_columnar(values, config.max_message_bytes)
    if readings is None:
        validator = ReadingValidator(config)
        result = validator.validate((RawMessage.from_kafka(m) for m in messages), now=now)
        rejected_offsets = {r.offset for r in result.rejected}
        kept = [offset_of(m) for m in messages if m.offset() not in rejected_offsets]
        counts = Counter({k.value: v for k, v in validator.rejected_by_reason.items()})
        return ClassifiedRange(
            readings_table(result.valid, offsets, kept),
            result.rejected,
            counts,
            validator.with_unknown_fields,
            validator.unknown_field_names,
        )
    verdict = validate_columns(readings, config, now)
    rejected = []
    for i, reason, detail in verdict.rejected:
        raw = RawMessage.from_kafka(messages[i])
        rejected.append(Rejection(reason, detail, *raw))
    rows = np.flatnonzero(verdict.accepted)
    # numpy refuses a None offset itself, which keeps this path free of per-message calls
    kept_offsets = np.fromiter(map(Message.offset, messages), np.int64, len(messages))[rows]
    counts = Counter(r.reason.value for r in rejected)
    return ClassifiedRange(columnar_table(readings, rows, offsets, kept_offsets), rejected, counts)


Classifier = Callable[[list[Message], OffsetRange, ValidationConfig, datetime], ClassifiedRange]
"""Splits one range's messages into the zone's rows and rejects (`classify_range` for
readings, `context_classifier` for incidents and weather)."""


def context_classifier(rules: ContextRules, zone: RawZone) -> Classifier:
    """A `Classifier` for a context stream: message by message (they are few), into the zone's
    columns."""

    def classify(
        messages: list[Message], offsets: OffsetRange, config: ValidationConfig, now: datetime
    ) -> ClassifiedRange:
        raws = (RawMessage.from_kafka(m) for m in messages)
        result, kept = validate_context(raws, rules, config, now)
        table = pa.Table.from_pylist(result.valid, schema=zone.message_schema)
        counts = Counter(r.reason.value for r in result.rejected)
        origin = np.asarray(kept, np.int64)  # fetched messages always have an offset
        return ClassifiedRange(_with_origin(table, offsets, origin), result.rejected, counts)

    return classify


MESSAGE_TOO_LARGE = KafkaError.MSG_SIZE_TOO_LARGE
"""librdkafka's local size check and the broker's MESSAGE_TOO_LARGE share this code."""


def send_rejects(
    dlq: Producer,
    dlq_topic: str,
    rejected: list[Rejection],
    *,
    flush: bool,
    max_record_bytes: int = DLQ_MAX_RECORD_BYTES,
) -> None:
    """Produce rejects to the dead-letter topic; with flush, wait until all are acknowledged.

    A reject over max_record_bytes, or one the client or broker refuses as too large, goes as
    its bounded reference record (`Rejection.to_dlq_record`), so no size stops the stream. Any
    other refusal raises IngestError. A transactional caller leaves flush off: committing its
    transaction delivers them (and a refusal aborts it).
    """
    refused: list[tuple[Rejection, KafkaError]] = []
    for rejection in rejected:
        _produce_reject(dlq, dlq_topic, rejection, max_record_bytes, refused)
    if not flush or not rejected:
        return
    _flush(dlq)
    too_large = [r for r, error in refused if error.code() == MESSAGE_TOO_LARGE]
    if len(too_large) < len(refused):
        error = next(e for _, e in refused if e.code() != MESSAGE_TOO_LARGE)
        raise IngestError(f"the dead-letter topic refused {len(refused)} rejects: {error}")
    if too_large:
        log.warning("%d rejects refused as too large; sent as references", len(too_large))
        retry: list[tuple[Rejection, KafkaError]] = []
        for rejection in too_large:
            _produce_reject(dlq, dlq_topic, rejection, 0, retry)
        _flush(dlq)
        if retry:
            raise IngestError(f"the dead-letter topic refused reference records: {retry[0][1]}")


def _produce_reject(
    dlq: Producer,
    topic: str,
    rejection: Rejection,
    max_record_bytes: int,
    refused: list[tuple[Rejection, KafkaError]],
) -> None:
    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            refused.append((rejection, error))

    record = rejection.to_dlq_record(max_record_bytes=max_record_bytes)
    try:
        dlq.produce(
            topic,
            record.value,
            record.key,
            headers=record.headers,  # type: ignore[arg-type]  # stub's list is invariant; read-only
            on_delivery=on_delivery,
        )
    except KafkaException as exc:
        if exc.args[0].code() != MESSAGE_TOO_LARGE or max_record_bytes == 0:
            raise
        _produce_reject(dlq, topic, rejection, 0, refused)


def _flush(dlq: Producer) -> None:
    if dlq.flush(60) > 0:
        raise IngestError("dead-letter topic did not acknowledge the rejects")


def dlq_record_budget(admin: AdminClient, dlq_topic: str, configured: int) -> int:
    """Largest reject copied whole into the DLQ: the configured limit, at most half the topic's
    max.message.bytes (headers, framing, and a batch that compression did not shrink)."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, dlq_topic)
    try:
        configs = admin.describe_configs([resource])[resource].result(timeout=30)
        topic_max = int(configs["max.message.bytes"].value)
    except (KafkaException, KeyError, ValueError, TimeoutError) as exc:
        log.warning(
            "max.message.bytes of %s unknown (%s); DLQ records up to %d bytes",
            dlq_topic,
            exc,
            configured,
        )
        return configured
    return min(configured, topic_max // 2)


def store_classified(
    lake_root: LakePath,
    offsets: OffsetRange,
    classified: ClassifiedRange,
    zone: RawZone = READINGS,
) -> RangeOutcome:
    """Write the valid rows of one classified range durably (one immutable file per date)."""
    files = write_raw_range(lake_root, offsets, classified.table, zone)
    ingest_ids = ingest_ids_by_date(classified.table)
    return RangeOutcome(
        offsets,
        classified.table.num_rows,
        classified.counts,
        files,
        ingest_ids,
        classified.unknown_fields,
        classified.with_unknown_fields,
    )


def ingest_ids_by_date(table: pa.Table) -> dict[date, Counter[str | None]]:
    """Readings per (event date, ingest id) of a raw table: one hash group-by, no Python loop
    over rows. Zones without ingest ids (incidents, weather) have none."""
    if not table.num_rows or "ingest_id" not in table.column_names:
        return {}
    keys = pa.table(
        {"day": pc.cast(table["event_time"], pa.date32()), "ingest_id": table["ingest_id"]}
    )
    groups = keys.group_by(["day", "ingest_id"]).aggregate([([], "count_all")])
    out: dict[date, Counter[str | None]] = {}
    for day, name, count in zip(
        *(groups[c].to_pylist() for c in ("day", "ingest_id", "count_all")), strict=True
    ):
        out.setdefault(day, Counter())[name] = count
    return out


def ingest_ranges(
    consumer: Consumer,
    dlq: Producer,
    lake_root: LakePath,
    ranges: Iterable[OffsetRange],
    config: ValidationConfig | None = None,
    *,
    dlq_topic: str = TRAFFIC_EVENTS_DLQ,
    now: datetime | None = None,
    after_range: Callable[[RangeOutcome], None] | None = None,
    dlq_max_record_bytes: int = DLQ_MAX_RECORD_BYTES,
    zone: RawZone = READINGS,
    classify: Classifier = classify_range,
) -> IngestReport:
    """Read, validate and store each range; commit its end offset once its files are durable.
    `zone` and `classify` pick the stream (readings by default)."""
    report = IngestReport()
    now = now or datetime.now(UTC)
    config = config or ValidationConfig()
    for offsets in sorted(ranges):
        with collection_paused():
            messages = read_range(consumer, offsets)
            classified = classify(messages, offsets, config, now)
        send_rejects(
            dlq, dlq_topic, classified.rejected, flush=True, max_record_bytes=dlq_max_record_bytes
        )
        outcome = store_classified(lake_root, offsets, classified, zone)
        commit_after(consumer, offsets)
        report.ranges.append(outcome)
        if after_range is not None:
            after_range(outcome)
    return report


COORDINATOR_NOT_READY = frozenset(
    {
        KafkaError._WAIT_COORD,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
    }
)
"""Commit errors of a group coordinator that is still being found or loaded: a fresh broker
creates __consumer_offsets on the first commit, and a moved coordinator is found again."""


def coordinator_not_ready(error: BaseException) -> bool:
    return isinstance(error, KafkaException) and error.args[0].code() in COORDINATOR_NOT_READY


@retry(
    retry=retry_if_exception(coordinator_not_ready),
    wait=wait_exponential(multiplier=0.2, max=2.0),
    stop=stop_after_delay(60),
    before_sleep=before_sleep_log(log, logging.WARNING),
    reraise=True,
)
def commit_after(consumer: Consumer, offsets: OffsetRange) -> None:
    """Commit offset last+1 of a stored range, waiting out a coordinator not yet ready; any
    other error, or one minute of waiting, fails the run (its files are durable: a rerun
    re-reads the range and writes the same files)."""
    consumer.commit(
        offsets=[TopicPartition(offsets.topic, offsets.partition, offsets.last + 1)],
        asynchronous=False,
    )
