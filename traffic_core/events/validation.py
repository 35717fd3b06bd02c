"""Classify raw reading messages into valid readings and DLQ-ready rejections.

A stream consumer must never stop on one bad record: every failure becomes a `Rejection` with a
machine-readable `Reason`, and the raw bytes go to the DLQ untouched so they can be replayed.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from traffic_core.events.codec import DecodeError, EventCodec, Record
from traffic_core.events.schema import READING, Reason

__all__ = [
    "DlqRecord",
    "RawMessage",
    "ReadingValidator",
    "Reason",
    "Rejection",
    "ValidationConfig",
    "ValidationResult",
    "check_reading",
]


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

    def to_dlq_record(self, rejected_at: datetime | None = None) -> DlqRecord:
        """Key and value exactly as received; the why and where travel as headers."""
        stamp = (rejected_at or datetime.now(UTC)).astimezone(UTC)
        headers = [
            ("dlq.reason", self.reason.value),
            ("dlq.detail", self.detail),
            ("dlq.rejected_at", stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")),
        ]
        source = {"topic": self.topic, "partition": self.partition, "offset": self.offset}
        headers += [(f"dlq.source.{k}", str(v)) for k, v in source.items() if v is not None]
        return DlqRecord(self.key, self.value, [(k, v.encode()) for k, v in headers])


class ValidationResult(NamedTuple):
    valid: list[Record]
    rejected: list[Rejection]


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
    event_time = reading["event_time"]
    if event_time > now + config.max_future_skew:
        return Reason.FUTURE_TIMESTAMP, f"event_time {event_time.isoformat()} is after {now}"
    if config.max_age is not None and event_time < now - config.max_age:
        return Reason.TIMESTAMP_TOO_OLD, f"event_time {event_time.isoformat()} is before {now}"
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
    """Stateful batch classifier: remembers recent keys to reject duplicates across batches."""

    config: ValidationConfig = field(default_factory=ValidationConfig)
    codec: EventCodec = field(default_factory=lambda: EventCodec(READING))
    rejected_by_reason: Counter[Reason] = field(default_factory=Counter, init=False)
    accepted: int = field(default=0, init=False)
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
        if not value:
            return Reason.UNDECODABLE, "empty message value"
        if len(value) > self.config.max_message_bytes:
            return (
                Reason.OVERSIZED_MESSAGE,
                f"{len(value)} bytes > limit {self.config.max_message_bytes}",
            )
        try:
            reading = self.codec.decode_any(value)
        except DecodeError as exc:
            return exc.reason, exc.detail
        if problem := check_reading(reading, self.config, now):
            return problem
        key = (reading["sensor_id"], reading["event_time"])
        if key in self._seen:
            return Reason.DUPLICATE_READING, f"sensor {key[0]!r} at {key[1].isoformat()} seen"
        self._remember(key)
        return reading

    def _remember(self, key: tuple[str, datetime]) -> None:
        # Only accepted readings are remembered, so a corrected resend of a rejected one passes.
        if self.config.dedup_window <= 0:  # duplicate rejection switched off
            return
        if len(self._order) >= self.config.dedup_window:
            self._seen.discard(self._order.popleft())
        self._order.append(key)
        self._seen.add(key)
