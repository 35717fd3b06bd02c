"""Keeps the incident book and the weather board current from `traffic-incidents` and
`weather-observations`, with the live readings' consumer machinery (`TopicFollower`): all
partitions assigned, rebuilt from the earliest offset the topic keeps (incidents are few and
may have started hours ago; the book and board bound memory), then followed live.

A bad record (undecodable, a field of the wrong type, an unknown sensor, an end before its
start, a measurement outside physics) is counted by reason, logged once per batch with its
offsets, and skipped: it never stops the stream. The lake writers put it on the DLQ.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

from confluent_kafka import Message

from serving.live.consumer import TopicFollower
from traffic_core.events import INCIDENT, WEATHER, EventCodec, Reason
from traffic_core.events.codec import Record
from traffic_core.kafka.messages import offset_of, partition_of

log = logging.getLogger(__name__)

Problem = tuple[Reason, str] | None
MAX_MESSAGE_BYTES = 64 * 1024
MEASUREMENT_RANGES = {
    "temperature_c": (-60.0, 60.0),
    "precipitation_mm": (0.0, 500.0),
    "visibility_km": (0.0, 200.0),
}
"""Physical bounds of a weather observation; beyond them it is a unit or sensor error."""


def incident_problem(record: Mapping[str, Any], known_sensors: Collection[str]) -> Problem:
    """Why an incident report cannot be used, or None."""
    if not record["incident_id"]:
        return Reason.MISSING_FIELD, "incident_id is empty"
    if record["sensor_id"] not in known_sensors:
        return Reason.UNKNOWN_SENSOR, f"sensor {record['sensor_id']!r} is not in the graph"
    end = record["end_time"]
    if end is not None and end < record["start_time"]:
        return Reason.OUT_OF_RANGE, "end_time is before start_time"
    return None


def weather_problem(record: Mapping[str, Any]) -> Problem:
    """Why a weather observation cannot be used, or None (a null measurement is fine)."""
    if not record["station_id"]:
        return Reason.MISSING_FIELD, "station_id is empty"
    for name, (low, high) in MEASUREMENT_RANGES.items():
        value = record[name]
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            return Reason.OUT_OF_RANGE, f"{name} {value} outside [{low}, {high}]"
    return None


class ContextConsumer(TopicFollower):
    """Decodes `subject` records from `topic`, checks them with `problem` and hands the good
    ones of each batch to `sink`; `on_change` runs after a live batch changed something and
    once when the rebuild caught up."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        subject: str,
        problem: Callable[[Record], Problem],
        sink: Callable[[list[Record]], int],
        on_change: Callable[[], None] | None = None,
        *,
        rebuild_hours: float = math.inf,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        **options: Any,
    ) -> None:
        options.setdefault("client_id", f"traffic-api-{topic}")
        super().__init__(bootstrap_servers, topic, rebuild_hours=rebuild_hours, **options)
        self.subject = subject
        self.problem = problem
        self.sink = sink
        self.on_change = on_change
        self.max_message_bytes = max_message_bytes
        self.applied = 0
        self._codec = EventCodec(subject)

    def _use(self, messages: list[Message], close: bool) -> None:
        records, bad = [], []
        for message in messages:
            record = self._checked(
                message.value(), self._codec, self.max_message_bytes, self.problem
            )
            if record is None:
                bad.append((partition_of(message), offset_of(message)))
            else:
                records.append(record)
        if bad:
            log.warning(
                "%s: skipped %d bad records at (partition, offset) %s; rejected so far: %s",
                self.topic,
                len(bad),
                bad[:20],
                self.rejected(),
            )
        if not records:
            return
        try:
            self.applied += self.sink(records)
        except Exception:  # never let one batch stop the stream
            self.batch_errors += 1
            log.exception(
                "%s: a batch of %d records could not be applied", self.topic, len(records)
            )
            return
        if close:
            self._changed()

    def _after_ready(self) -> None:
        self._changed()

    def _changed(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change()
        except Exception:
            self.callback_errors += 1
            log.exception("%s: on_change failed", self.topic)


def incident_consumer(
    bootstrap_servers: str,
    topic: str,
    known_sensors: Collection[str],
    sink: Callable[[list[Record]], int],
    on_change: Callable[[], None] | None = None,
    **options: Any,
) -> ContextConsumer:
    known = frozenset(known_sensors)
    return ContextConsumer(
        bootstrap_servers,
        topic,
        INCIDENT,
        lambda record: incident_problem(record, known),
        sink,
        on_change,
        **options,
    )


def weather_consumer(
    bootstrap_servers: str,
    topic: str,
    sink: Callable[[list[Record]], int],
    on_change: Callable[[], None] | None = None,
    **options: Any,
) -> ContextConsumer:
    return ContextConsumer(
        bootstrap_servers, topic, WEATHER, weather_problem, sink, on_change, **options
    )
