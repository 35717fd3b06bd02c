"""Each message of the readings topic becomes a windowable `Reading` or a DLQ-ready `Rejection`.

The content rules are the lake writers' (`ReadingValidator` with the same `ValidationConfig`),
so the stream windows the readings the lake stores. Two lake rules are replaced by stream ones:
repeats are not rejected, because `traffic_core.windows` lets a resend replace what it resends,
and lateness is judged against the window's grace (`traffic_core.streams.windowing`) instead
of the lake's allowed lateness.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from traffic_core.events import RawMessage, ReadingValidator, Reason, Rejection, ValidationConfig

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Reading:
    """A valid reading, with the message it came from (for a DLQ record if it turns late)."""

    sensor_id: str
    event_ms: int
    speed_mph: float | None
    is_synthetic: bool
    raw: RawMessage

    def rejected(self, reason: Reason, detail: str) -> Rejection:
        raw = self.raw
        return Rejection(reason, detail, raw.value, raw.key, raw.topic, raw.partition, raw.offset)


def stream_rules(config: ValidationConfig) -> ValidationConfig:
    """The lake writers' rules minus those the stream replaces (module docstring)."""
    return replace(config, dedup_window=0, allowed_lateness=None, partition_days=None)


class ReadingClassifier:
    """Never raises for a message's content: whatever arrives is a Reading or a Rejection."""

    def __init__(
        self,
        config: ValidationConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.validator = ReadingValidator(stream_rules(config))
        self._clock = clock

    def __call__(self, message: RawMessage) -> Reading | Rejection:
        result = self.validator.validate([message], now=self._clock())
        if result.rejected:
            return result.rejected[0]
        record = result.valid[0]
        sensor_id = record["sensor_id"]
        if message.key != sensor_id.encode():
            return Rejection(
                Reason.KEY_MISMATCH,
                f"key {message.key!r:.80} is not the reading's sensor id {sensor_id!r:.80}",
                message.value,
                message.key,
                message.topic,
                message.partition,
                message.offset,
            )
        return Reading(
            sensor_id,
            (record["event_time"] - _EPOCH) // _MS,
            record["speed_mph"],
            record["is_synthetic"],
            message,
        )
