"""Content rules for the context streams (incident reports, weather observations).

They share the readings' decoding and time rules (`decode_message`, `check_event_time`), so a
bad incident or observation reaches the DLQ with the same reasons as a bad reading. Incident
updates reuse their id on purpose (an end time arriving later), so no duplicate rule applies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from traffic_core.events.codec import DecodeError, EventCodec, Record
from traffic_core.events.schema import INCIDENT, WEATHER, Reason
from traffic_core.events.validation import (
    RawMessage,
    Rejection,
    ValidationConfig,
    ValidationResult,
    check_event_time,
    decode_message,
)

Check = Callable[[Mapping[str, Any], ValidationConfig, datetime], tuple[Reason, str] | None]

TEMPERATURE_RANGE_C = (-60.0, 60.0)
MAX_PRECIPITATION_MM = 500.0
"""More than any hourly rainfall on record; larger values are a unit or sensor error."""
MAX_VISIBILITY_KM = 200.0


def _sensor(record: Mapping[str, Any], config: ValidationConfig) -> tuple[Reason, str] | None:
    sensor_id = record["sensor_id"]
    if not sensor_id:
        return Reason.MISSING_FIELD, "sensor_id is empty"
    if config.known_sensors is not None and sensor_id not in config.known_sensors:
        return Reason.UNKNOWN_SENSOR, f"sensor {sensor_id!r} is not in the catalogue"
    return None


def check_incident(
    record: Mapping[str, Any], config: ValidationConfig, now: datetime
) -> tuple[Reason, str] | None:
    """An incident needs an id, a known sensor, a plausible start and an end after it."""
    if not record["incident_id"]:
        return Reason.MISSING_FIELD, "incident_id is empty"
    if problem := _sensor(record, config):
        return problem
    if problem := check_event_time(record["start_time"], config, now, "start_time"):
        return problem
    end = record["end_time"]
    if end is not None and end < record["start_time"]:
        return Reason.OUT_OF_RANGE, f"end_time {end.isoformat()} is before start_time"
    unknown = [s for s in record["affected_sensors"] if not s]
    if unknown:
        return Reason.MISSING_FIELD, "affected_sensors holds an empty sensor id"
    return None


def _bounded(
    record: Mapping[str, Any], name: str, low: float, high: float
) -> tuple[Reason, str] | None:
    value = record[name]
    if value is not None and (math.isnan(value) or not low <= value <= high):
        return Reason.OUT_OF_RANGE, f"{name} {value} outside [{low}, {high}]; send null if unknown"
    return None


def check_weather(
    record: Mapping[str, Any], config: ValidationConfig, now: datetime
) -> tuple[Reason, str] | None:
    """An observation needs a station, a plausible time and physical measurements."""
    if not record["station_id"]:
        return Reason.MISSING_FIELD, "station_id is empty"
    if problem := check_event_time(record["observed_at"], config, now, "observed_at"):
        return problem
    return (
        _bounded(record, "temperature_c", *TEMPERATURE_RANGE_C)
        or _bounded(record, "precipitation_mm", 0.0, MAX_PRECIPITATION_MM)
        or _bounded(record, "visibility_km", 0.0, MAX_VISIBILITY_KM)
    )


@dataclass(frozen=True)
class ContextRules:
    subject: str
    check: Check


INCIDENT_RULES = ContextRules(INCIDENT, check_incident)
WEATHER_RULES = ContextRules(WEATHER, check_weather)


def validate_context(
    messages: Iterable[RawMessage], rules: ContextRules, config: ValidationConfig, now: datetime
) -> tuple[ValidationResult, list[int | None]]:
    """Split context messages into records and rejections (input order kept), plus each kept
    record's offset; never raises for bad data."""
    codec = EventCodec(rules.subject)
    result = ValidationResult([], [])
    kept: list[int | None] = []
    for raw in messages:
        outcome = _classify(raw.value, rules, codec, config, now)
        if isinstance(outcome, dict):
            result.valid.append(outcome)
            kept.append(raw.offset)
        else:
            result.rejected.append(Rejection(outcome[0], outcome[1], *raw))
    return result, kept


def _classify(
    value: bytes | None,
    rules: ContextRules,
    codec: EventCodec,
    config: ValidationConfig,
    now: datetime,
) -> Record | tuple[Reason, str]:
    try:
        record, _ = decode_message(value, config, codec)
    except DecodeError as exc:
        return exc.reason, exc.detail
    return rules.check(record, config, now) or record
