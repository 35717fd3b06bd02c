"""The stream's side of `traffic_core.windows`: what a window keeps while open, when a reading
is too late for it, and the aggregate record it becomes when it closes.

Quix Streams keys windows by the message key (the sensor id) and, with the "key" closing
strategy, closes a sensor's window [start, end) once that sensor's newest event time reaches
end + grace. A reading for a closed window is late. `LateGate` applies the same rule one step
before the window, in its own state, so a late reading becomes a LATE_READING rejection that
is produced in the same transaction as everything else instead of being dropped by the
window: the window itself never sees a late reading.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypedDict

import pandas as pd

from traffic_core.events import Reason, Rejection
from traffic_core.streams.classify import Reading
from traffic_core.windows import WINDOW, aggregate_window

WINDOW_MS = WINDOW // pd.Timedelta(milliseconds=1)
_LATEST = "latest_ms"


class OpenWindow(TypedDict):
    """State of one open window: [event ms, speed] per event time (a resend replaces the
    reading it resends: the highest offset wins, as in `traffic_core.windows.deduplicate`),
    and whether any reading was synthetic. JSON in the state store."""

    readings: list[list[Any]]
    synthetic: bool


class ClosedWindow(TypedDict):
    """What Quix emits for a closed window."""

    start: int
    end: int
    value: OpenWindow


def window_start_ms(event_ms: int) -> int:
    return event_ms - event_ms % WINDOW_MS


class LateGate:
    """Stateful step before the window: rejects readings whose window has closed and keeps
    each sensor's newest event time (the same one the window's closing uses)."""

    def __init__(self, grace_ms: int) -> None:
        self.grace_ms = grace_ms

    def __call__(
        self, item: Reading | Rejection, _key: Any, _timestamp: int, _headers: Any, state: Any
    ) -> Reading | Rejection:
        if isinstance(item, Rejection):
            return item
        latest = state.get(_LATEST)
        if latest is not None:
            closes_at = window_start_ms(item.event_ms) + WINDOW_MS + self.grace_ms
            if closes_at <= latest:
                return item.rejected(
                    Reason.LATE_READING,
                    f"event_time {_iso(item.event_ms)} is in a window closed at "
                    f"{_iso(closes_at)} (end + grace {self.grace_ms} ms); the sensor's newest "
                    f"event time is {_iso(latest)}",
                )
        if latest is None or item.event_ms > latest:
            state.set(_LATEST, item.event_ms)
        return item


def open_window(reading: Reading) -> OpenWindow:
    return {
        "readings": [[reading.event_ms, reading.speed_mph]],
        "synthetic": reading.is_synthetic,
    }


def add_reading(window: OpenWindow, reading: Reading) -> OpenWindow:
    readings = window["readings"]
    for entry in readings:
        if entry[0] == reading.event_ms:
            entry[1] = reading.speed_mph
            break
    else:
        readings.append([reading.event_ms, reading.speed_mph])
    window["synthetic"] = window["synthetic"] or reading.is_synthetic
    return window


def aggregate_record(closed: ClosedWindow, sensor_id: str, emitted_ms: int) -> dict[str, Any]:
    """The `traffic_aggregate` record of a closed window (`traffic_core.windows` numbers; Avro
    nulls where those are NaN)."""
    stats = aggregate_window([speed for _, speed in closed["value"]["readings"]])
    record: dict[str, Any] = {
        key: None if isinstance(value, float) and value != value else value
        for key, value in stats.items()
    }
    record.update(
        sensor_id=sensor_id,
        window_start=closed["start"],
        window_end=closed["end"],
        is_synthetic=closed["value"]["synthetic"],
        emitted_at=emitted_ms,
    )
    return record


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
