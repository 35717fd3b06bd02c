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

import pandas as pd
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from traffic_core.events import RawMessage, ReadingValidator, ValidationConfig
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
            for message in batch:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise IngestError(f"{offsets}: {error}")
                if message.offset() > offsets.last:
                    break
                messages.append(message)
                next_offset = message.offset() + 1
    finally:
        consumer.unassign()
    return messages


def readings_frame(
    records: list[dict], offsets: OffsetRange, kafka_offsets: list[int]
) -> pd.DataFrame:
    """Decoded readings plus where each came from, in the raw zone's columns."""
    frame = pd.DataFrame.from_records(
        records,
        columns=[
            "sensor_id",
            "event_time",
            "speed_mph",
            "volume",
            "occupancy",
            "source",
            "is_synthetic",
        ],
    )
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame["kafka_topic"] = offsets.topic
    frame["kafka_partition"] = offsets.partition
    frame["kafka_offset"] = kafka_offsets
    return frame[RAW_SCHEMA.names]


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
    for offsets in sorted(ranges):
        messages = read_range(consumer, offsets)
        # A fresh validator per range: the outcome of a range never depends on what ran before.
        validator = ReadingValidator(config or ValidationConfig())
        result = validator.validate((RawMessage.from_kafka(m) for m in messages), now=now)
        rejected_offsets = {r.offset for r in result.rejected}
        kept = [m.offset() for m in messages if m.offset() not in rejected_offsets]
        for rejection in result.rejected:
            record = rejection.to_dlq_record()
            dlq.produce(dlq_topic, record.value, record.key, headers=record.headers)
        if result.rejected and dlq.flush(60) > 0:
            raise IngestError(f"{offsets}: dead-letter topic did not acknowledge the rejects")
        files = write_raw_range(lake_root, offsets, readings_frame(result.valid, offsets, kept))
        consumer.commit(
            offsets=[TopicPartition(offsets.topic, offsets.partition, offsets.last + 1)],
            asynchronous=False,
        )
        outcome = RangeOutcome(
            offsets,
            len(result.valid),
            Counter({k.value: v for k, v in validator.rejected_by_reason.items()}),
            files,
        )
        report.ranges.append(outcome)
        if after_range is not None:
            after_range(outcome)
    return report
