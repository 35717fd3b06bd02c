"""Exactly-once ingestion of Kafka offset ranges into the raw zone of the lake.

Kafka offsets are the ledger: a caller names exact ranges, every message of a range is read,
valid readings are written to one file per (date, range) and rejects to the dead-letter topic.
Only after the files are durable are the offsets committed (for lag monitoring), so a crash at
any point means a rerun of the same ranges, which rewrites the same files.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from traffic_core.events import RawMessage, ReadingValidator, Rejection, ValidationConfig
from traffic_core.events.bulk import ColumnarReadings, decode_readings_columnar, validate_columns
from traffic_core.kafka.topics import TRAFFIC_EVENTS_DLQ
from traffic_core.lake import RAW_SCHEMA, OffsetRange, write_raw_range


class IngestError(RuntimeError):
    """A range could not be read completely; nothing was committed for it."""


@dataclass
class RangeOutcome:
    offsets: OffsetRange
    accepted: int
    rejected: Counter[str]
    files: dict[date, Path]


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

    def rows_by_date(self) -> dict[date, list[Path]]:
        out: dict[date, list[Path]] = {}
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
            elif batch and batch[-1].offset() > offsets.last:  # offsets rise in a partition
                batch = [m for m in batch if m.offset() <= offsets.last]
            if batch:
                messages += batch
                next_offset = batch[-1].offset() + 1
    finally:
        consumer.unassign()
    return messages


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
        if message.offset() > offsets.last:
            break
        kept.append(message)
    return kept


_READING_COLUMNS = [
    "sensor_id",
    "event_time",
    "speed_mph",
    "volume",
    "occupancy",
    "source",
    "is_synthetic",
]


def readings_frame(
    records: list[dict], offsets: OffsetRange, kafka_offsets: list[int]
) -> pd.DataFrame:
    """Decoded readings plus where each came from, in the raw zone's columns."""
    frame = pd.DataFrame.from_records(records, columns=_READING_COLUMNS)
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    return _with_origin(frame, offsets, kafka_offsets)


def columnar_frame(
    readings: ColumnarReadings,
    rows: np.ndarray,
    offsets: OffsetRange,
    kafka_offsets: list[int] | np.ndarray,
) -> pd.DataFrame:
    """`readings_frame` of the given rows, with the same dtypes, built without per-row dicts."""
    if not len(rows):
        return readings_frame([], offsets, kafka_offsets)
    taken = pa.array(rows)
    frame = pd.DataFrame(
        {
            "sensor_id": _strings(readings.sensor_id.take(taken)),
            "event_time": pd.to_datetime(readings.event_time[rows], unit="ms", utc=True),
            "speed_mph": _like_records(readings.speed_mph[rows], readings.speed_null[rows]),
            "volume": _like_records(readings.volume[rows], readings.volume_null[rows]),
            "occupancy": _like_records(readings.occupancy[rows], readings.occupancy_null[rows]),
            "source": _strings(readings.source.take(taken)),
            "is_synthetic": readings.is_synthetic[rows],
        }
    )
    return _with_origin(frame, offsets, kafka_offsets)


def _strings(array: pa.StringArray) -> np.ndarray:
    """Object array of str, converting each distinct value once (ids repeat across a range)."""
    encoded = pc.dictionary_encode(array)
    labels = np.array(encoded.dictionary.to_pylist(), dtype=object)
    return labels[encoded.indices.to_numpy()]


def _like_records(values: np.ndarray, null: np.ndarray) -> np.ndarray:
    """The dtype pandas infers from Python values with None: object if all null, float if any."""
    if null.all():
        return np.full(len(values), None, dtype=object)
    if null.any():
        return np.where(null, np.nan, values)
    return values


def _with_origin(
    frame: pd.DataFrame, offsets: OffsetRange, kafka_offsets: list[int] | np.ndarray
) -> pd.DataFrame:
    frame["kafka_topic"] = offsets.topic
    frame["kafka_partition"] = offsets.partition
    frame["kafka_offset"] = kafka_offsets
    return frame[RAW_SCHEMA.names]


@dataclass
class ClassifiedRange:
    """One range split into the lake frame, the rejects and their counts per reason."""

    frame: pd.DataFrame
    rejected: list[Rejection]
    counts: Counter[str]


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
        kept = [m.offset() for m in messages if m.offset() not in rejected_offsets]
        counts = Counter({k.value: v for k, v in validator.rejected_by_reason.items()})
        return ClassifiedRange(readings_frame(result.valid, offsets, kept), result.rejected, counts)
    verdict = validate_columns(readings, config, now)
    rejected = []
    for i, reason, detail in verdict.rejected:
        raw = RawMessage.from_kafka(messages[i])
        rejected.append(Rejection(reason, detail, *raw))
    rows = np.flatnonzero(verdict.accepted)
    kept = np.fromiter(map(Message.offset, messages), np.int64, len(messages))[rows]
    counts = Counter(r.reason.value for r in rejected)
    return ClassifiedRange(columnar_frame(readings, rows, offsets, kept), rejected, counts)


def ingest_ranges(
    consumer: Consumer,
    dlq: Producer,
    lake_root: Path,
    ranges: Iterable[OffsetRange],
    config: ValidationConfig | None = None,
    *,
    dlq_topic: str = TRAFFIC_EVENTS_DLQ,
    now: datetime | None = None,
    after_range: Callable[[RangeOutcome], None] | None = None,
) -> IngestReport:
    """Read, validate and store each range; commit its end offset once its files are durable."""
    report = IngestReport()
    now = now or datetime.now(UTC)
    config = config or ValidationConfig()
    for offsets in sorted(ranges):
        messages = read_range(consumer, offsets)
        classified = classify_range(messages, offsets, config, now)
        for rejection in classified.rejected:
            record = rejection.to_dlq_record()
            dlq.produce(dlq_topic, record.value, record.key, headers=record.headers)
        if classified.rejected and dlq.flush(60) > 0:
            raise IngestError(f"{offsets}: dead-letter topic did not acknowledge the rejects")
        files = write_raw_range(lake_root, offsets, classified.frame)
        consumer.commit(
            offsets=[TopicPartition(offsets.topic, offsets.partition, offsets.last + 1)],
            asynchronous=False,
        )
        outcome = RangeOutcome(offsets, len(classified.frame), classified.counts, files)
        report.ranges.append(outcome)
        if after_range is not None:
            after_range(outcome)
    return report
