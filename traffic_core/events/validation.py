"""Classify raw reading messages into valid readings and DLQ-ready rejections.

A stream consumer must never stop on one bad record: every failure becomes a `Rejection` with a
machine-readable `Reason`, and the raw bytes go to the DLQ untouched so they can be replayed.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, NamedTuple

import orjson

from traffic_core.events.codec import DecodeError, EventCodec, Record
from traffic_core.events.schema import READING, Reason

__all__ = [
    "DLQ_MAX_RECORD_BYTES",
    "EVENT_TIME_FLOOR",
    "DlqRecord",
    "RawMessage",
    "ReadingValidator",
    "Reason",
    "Rejection",
    "UnknownFieldPolicy",
    "ValidationConfig",
    "ValidationResult",
    "check_event_time",
    "check_reading",
    "decode_message",
]

EVENT_TIME_FLOOR = datetime(2012, 3, 1, tzinfo=UTC)
"""Earliest event time accepted by default: the first day of METR-LA, the oldest network served
(PEMS-BAY starts in 2017). Anything older is a broken clock or a forged record."""

DLQ_MAX_RECORD_BYTES = 512 * 1024
"""Key plus value of a reject copied whole into the DLQ. Half the broker's default
message.max.bytes (1 MiB), leaving room for headers and batch framing whatever the DLQ
producer's compression; a larger reject is replaced by a reference record."""

DLQ_PREFIX_BYTES = 256
"""Leading bytes of an oversized reject kept in its reference record (base64)."""

_DETAIL_CHARS = 500
"""Details quote message content (a sensor id, a parser message): bounded in DLQ headers."""

UnknownFieldPolicy = Literal["count", "reject"]
"""What to do with a JSON message carrying fields the schema lacks: accept it and count it
(the default: producers may be newer than this reader), or reject it with UNKNOWN_FIELD."""


@dataclass(frozen=True, slots=True)
class ValidationConfig:
    max_speed_mph: float = 120.0
    max_message_bytes: int = 64 * 1024
    known_sensors: frozenset[str] | None = None
    """None disables UNKNOWN_SENSOR (e.g. before the sensor catalogue is loaded)."""
    max_future_skew: timedelta = timedelta(minutes=5)
    max_age: timedelta | None = None
    """None disables TIMESTAMP_TOO_OLD; replays of 2012 data are old on purpose."""
    dedup_window: int = 100_000
    """Recent (sensor_id, event_time) keys remembered: ~2 days of METR-LA's 207 sensors."""
    event_time_floor: datetime | None = EVENT_TIME_FLOOR
    """Earlier event times are rejected (TIMESTAMP_BEFORE_FLOOR); None disables the check."""
    allowed_lateness: timedelta | None = None
    """How far behind its sensor's watermark (the latest event time a validator has accepted
    for that sensor) a reading may be; older ones are LATE_READING. None disables the check.

    Per sensor, since a producer sends each sensor's readings in time order: one forged reading
    stamped far ahead then holds back only its own sensor, never the rest of the stream."""
    partition_days: tuple[date, date] | None = None
    """First and last event date (UTC, inclusive) the writer has partitions for; readings of
    other dates are OUTSIDE_PARTITIONS. None: no partitioned writer behind this validation."""
    unknown_fields: UnknownFieldPolicy = "count"


class RawMessage(NamedTuple):
    value: bytes | None
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    @classmethod
    def from_kafka(cls, message: Any) -> RawMessage:
        """From a confluent_kafka.Message (accessors are methods there)."""
        return cls(
            message.value(), message.key(), message.topic(), message.partition(), message.offset()
        )


class DlqRecord(NamedTuple):
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str
    value: bytes | None
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    def to_dlq_record(
        self, rejected_at: datetime | None = None, max_record_bytes: int = DLQ_MAX_RECORD_BYTES
    ) -> DlqRecord:
        """Key and value exactly as received; the why and where travel as headers.

        A reject whose key and value exceed max_record_bytes (a message the broker took
        compressed, say) is replaced by a bounded reference record: a JSON value naming the
        source topic, partition and offset, the size, the reason, a prefix and the sha256 of
        the value, so the original can be found and replayed from the source topic.
        """
        stamp = (rejected_at or datetime.now(UTC)).astimezone(UTC)
        headers = [
            ("dlq.reason", self.reason.value),
            ("dlq.detail", self.detail[:_DETAIL_CHARS]),
            ("dlq.rejected_at", stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")),
        ]
        source = {"topic": self.topic, "partition": self.partition, "offset": self.offset}
        headers += [(f"dlq.source.{k}", str(v)) for k, v in source.items() if v is not None]
        encoded = [(k, v.encode()) for k, v in headers]
        size = len(self.value or b"") + len(self.key or b"")
        if size <= max_record_bytes:
            return DlqRecord(self.key, self.value, encoded)
        reference = self.reference()
        reference_headers = [
            ("dlq.payload", b"reference"),
            ("dlq.original.size", str(reference["size"]).encode()),
            ("dlq.original.sha256", reference["sha256"].encode()),
        ]
        key = self.key if self.key is not None and len(self.key) <= DLQ_PREFIX_BYTES else None
        return DlqRecord(key, orjson.dumps(reference), encoded + reference_headers)

    def reference(self) -> dict[str, Any]:
        """Where the original is and enough of it to recognise it (the reference record)."""
        value = self.value or b""
        return {
            "dlq_reference": 1,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "size": len(value),
            "key_size": None if self.key is None else len(self.key),
            "key_sha256": None if self.key is None else hashlib.sha256(self.key).hexdigest(),
            "reason": self.reason.value,
            "detail": self.detail[:_DETAIL_CHARS],
            "sha256": hashlib.sha256(value).hexdigest(),
            "prefix_base64": base64.b64encode(value[:DLQ_PREFIX_BYTES]).decode(),
        }


class ValidationResult(NamedTuple):
    valid: list[Record]
    rejected: list[Rejection]


def check_event_time(
    event_time: datetime, config: ValidationConfig, now: datetime, name: str = "event_time"
) -> tuple[Reason, str] | None:
    """The time rules every record's own timestamp obeys (future, age, floor, partitions)."""
    if event_time > now + config.max_future_skew:
        return Reason.FUTURE_TIMESTAMP, f"{name} {event_time.isoformat()} is after {now}"
    if config.max_age is not None and event_time < now - config.max_age:
        return Reason.TIMESTAMP_TOO_OLD, f"{name} {event_time.isoformat()} is before {now}"
    floor = config.event_time_floor
    if floor is not None and event_time < floor:
        return (
            Reason.TIMESTAMP_BEFORE_FLOOR,
            f"{name} {event_time.isoformat()} is before {floor.isoformat()}",
        )
    days = config.partition_days
    if days is not None and not days[0] <= event_time.date() <= days[1]:
        return (
            Reason.OUTSIDE_PARTITIONS,
            f"event date {event_time.date()} is outside the partitions {days[0]}..{days[1]}",
        )
    return None


def decode_message(
    value: bytes | None, config: ValidationConfig, codec: EventCodec
) -> tuple[Record, list[str]]:
    """A message decoded by its subject's codec, and the JSON fields the schema lacks; raises
    DecodeError (with the DLQ reason) for anything that is not a well-typed record."""
    if not value:
        raise DecodeError(Reason.UNDECODABLE, "empty message value")
    if len(value) > config.max_message_bytes:
        raise DecodeError(
            Reason.OVERSIZED_MESSAGE, f"{len(value)} bytes > limit {config.max_message_bytes}"
        )
    try:
        record, unknown = codec.decode_any_checked(value)
    except DecodeError:
        raise
    except Exception as exc:  # a decoder failure we did not foresee is still the record's
        detail = f"decoding failed: {type(exc).__name__}: {exc}"[:200]
        raise DecodeError(Reason.UNDECODABLE, detail) from exc
    if unknown and config.unknown_fields == "reject":
        raise DecodeError(Reason.UNKNOWN_FIELD, f"fields not in the schema: {_names(unknown)}")
    return record, unknown


def check_reading(
    reading: Mapping[str, Any], config: ValidationConfig, now: datetime
) -> tuple[Reason, str] | None:
    """Content rules for a decoded (hence well-typed) reading; None when it is acceptable.

    `now` is a parameter because replays of 2012 data run on the replay clock.
    """
    sensor_id = reading["sensor_id"]
    if not sensor_id:
        return Reason.MISSING_FIELD, "sensor_id is empty"
    if config.known_sensors is not None and sensor_id not in config.known_sensors:
        return Reason.UNKNOWN_SENSOR, f"sensor {sensor_id!r} is not in the catalogue"
    if problem := check_event_time(reading["event_time"], config, now):
        return problem
    speed = reading["speed_mph"]
    if speed is not None:  # None is an explicit missing reading, which is valid
        if math.isnan(speed):
            return Reason.NAN_SPEED, "speed_mph is NaN; send null for a missing reading"
        if speed < 0:
            return Reason.NEGATIVE_SPEED, f"speed_mph {speed} < 0"
        if speed > config.max_speed_mph:
            return Reason.SPEED_TOO_HIGH, f"speed_mph {speed} > {config.max_speed_mph}"
    volume, occupancy = reading["volume"], reading["occupancy"]
    if volume is not None and volume < 0:
        return Reason.OUT_OF_RANGE, f"volume {volume} < 0"
    if occupancy is not None and not 0.0 <= occupancy <= 1.0:
        return Reason.OUT_OF_RANGE, f"occupancy {occupancy} outside [0, 1]"
    return None


@dataclass
class ReadingValidator:
    """Stateful batch classifier: remembers recent keys to reject duplicates across batches,
    and each sensor's watermark (its latest accepted event time) to reject readings far behind
    it."""

    config: ValidationConfig = field(default_factory=ValidationConfig)
    codec: EventCodec = field(default_factory=lambda: EventCodec(READING))
    rejected_by_reason: Counter[Reason] = field(default_factory=Counter, init=False)
    accepted: int = field(default=0, init=False)
    with_unknown_fields: int = field(default=0, init=False)
    """Accepted messages that carried fields the schema lacks (policy "count")."""
    unknown_field_names: Counter[str] = field(default_factory=Counter, init=False)
    """Those fields by name; at most `_NAMES_KEPT` names are told apart, the rest are '...'."""
    watermarks: dict[str, datetime] = field(default_factory=dict, init=False)
    _seen: set[tuple[str, datetime]] = field(default_factory=set, init=False, repr=False)
    _order: deque[tuple[str, datetime]] = field(default_factory=deque, init=False, repr=False)

    def validate(
        self, messages: Iterable[bytes | RawMessage], *, now: datetime | None = None
    ) -> ValidationResult:
        """Split a batch, preserving input order in both lists; never raises for bad data."""
        now = now or datetime.now(UTC)
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        result = ValidationResult([], [])
        for message in messages:
            raw = message if isinstance(message, RawMessage) else RawMessage(message)
            outcome = self._classify(raw.value, now)
            if isinstance(outcome, dict):
                result.valid.append(outcome)
                self.accepted += 1
            else:
                reason, detail = outcome
                rejection = Rejection(
                    reason, detail, raw.value, raw.key, raw.topic, raw.partition, raw.offset
                )
                result.rejected.append(rejection)
                self.rejected_by_reason[reason] += 1
        return result

    def _classify(self, value: bytes | None, now: datetime) -> Record | tuple[Reason, str]:
        try:
            reading, unknown = decode_message(value, self.config, self.codec)
        except DecodeError as exc:
            return exc.reason, exc.detail
        if problem := check_reading(reading, self.config, now):
            return problem
        if problem := self._late(reading["sensor_id"], reading["event_time"]):
            return problem
        key = (reading["sensor_id"], reading["event_time"])
        if key in self._seen:
            return Reason.DUPLICATE_READING, f"sensor {key[0]!r} at {key[1].isoformat()} seen"
        self._remember(key)
        if key[0] not in self.watermarks or key[1] > self.watermarks[key[0]]:
            self.watermarks[key[0]] = key[1]
        if unknown:
            self._count_unknown(unknown)
        return reading

    def _late(self, sensor_id: str, event_time: datetime) -> tuple[Reason, str] | None:
        lateness = self.config.allowed_lateness
        mark = self.watermarks.get(sensor_id)
        if lateness is None or mark is None or mark - event_time <= lateness:
            return None
        return (
            Reason.LATE_READING,
            f"event_time {event_time.isoformat()} is more than {lateness} behind the "
            f"sensor's watermark {mark.isoformat()}",
        )

    def _count_unknown(self, names: list[str]) -> None:
        self.with_unknown_fields += 1
        for name in (n[:_NAME_CHARS] for n in names):
            if name in self.unknown_field_names or len(self.unknown_field_names) < _NAMES_KEPT:
                self.unknown_field_names[name] += 1
            else:
                self.unknown_field_names["..."] += 1

    def _remember(self, key: tuple[str, datetime]) -> None:
        # Only accepted readings are remembered, so a corrected resend of a rejected one passes.
        if self.config.dedup_window <= 0:  # duplicate rejection switched off
            return
        if len(self._order) >= self.config.dedup_window:
            self._seen.discard(self._order.popleft())
        self._order.append(key)
        self._seen.add(key)


_NAMES_KEPT = 20
_NAME_CHARS = 64


def _names(names: list[str]) -> str:
    """A bounded rendering of field names taken from a message."""
    shown = ", ".join(repr(n[:_NAME_CHARS]) for n in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")
