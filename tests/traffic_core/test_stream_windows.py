"""The stream's pieces without a broker: one window's numbers equal the batch definition, every
message classifies without raising, and an open window keeps one reading per event time."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traffic_core import windows as w
from traffic_core.events import RawMessage, Reason, Rejection, ValidationConfig, encode_reading
from traffic_core.streams.classify import Reading, ReadingClassifier
from traffic_core.streams.windowing import add_reading, aggregate_record, open_window

SPEEDS = st.lists(
    st.one_of(st.none(), st.floats(0, 120, allow_nan=False), st.sampled_from([30.0, 59.99, 60.0])),
    min_size=1,
    max_size=8,
)
CLOCK = datetime(2026, 1, 1, tzinfo=UTC)


@settings(derandomize=True, deadline=None, max_examples=300, database=None)
@given(SPEEDS)
def test_one_window_equals_the_batch_definition(speeds: list[float | None]) -> None:
    stamps = pd.date_range("2012-03-01", periods=len(speeds), freq="20s", tz="UTC")
    frame = pd.DataFrame({"sensor_id": "s", "event_time": stamps, "speed_mph": speeds})
    (expected,) = w.aggregate_windows(frame).to_dict("records")
    actual = w.aggregate_window(speeds)
    assert actual.keys() == set(w.AGGREGATE_COLUMNS) - {"sensor_id", "window_start"}
    for name, value in actual.items():
        if isinstance(value, float):
            assert value == pytest.approx(expected[name], abs=1e-9, nan_ok=True), name
        else:
            assert value == expected[name], name


def test_a_window_without_readings_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one reading"):
        w.aggregate_window([])


def classifier() -> ReadingClassifier:
    return ReadingClassifier(ValidationConfig(known_sensors=frozenset({"s1"})), lambda: CLOCK)


def message(value: bytes | None, key: bytes | None = b"s1", offset: int = 0) -> RawMessage:
    return RawMessage(value, key, "traffic-events", 0, offset)


def reading_bytes(sensor: str, minute: int, speed: float | None) -> bytes:
    stamp = datetime(2012, 3, 1, 0, minute, tzinfo=UTC)
    return encode_reading(
        {"sensor_id": sensor, "event_time": stamp, "speed_mph": speed, "source": "t"}
    )


@settings(derandomize=True, deadline=None, max_examples=300, database=None)
@given(st.one_of(st.none(), st.binary(max_size=80)), st.one_of(st.none(), st.binary(max_size=8)))
def test_any_message_is_a_reading_or_a_rejection(value: bytes | None, key: bytes | None) -> None:
    outcome = classifier()(message(value, key))
    assert isinstance(outcome, Reading | Rejection)
    if isinstance(outcome, Rejection):
        assert outcome.value == value and outcome.key == key and outcome.offset == 0


def test_the_lake_rules_apply_but_resends_pass_and_keys_must_be_the_sensor() -> None:
    classify = classifier()
    first = classify(message(reading_bytes("s1", 0, 50.0)))
    assert isinstance(first, Reading)
    assert (first.sensor_id, first.event_ms, first.speed_mph) == ("s1", 1_330_560_000_000, 50.0)
    assert isinstance(classify(message(reading_bytes("s1", 0, 51.0), offset=1)), Reading)
    reasons = [
        classify(message(reading_bytes("s1", 0, -3.0))),
        classify(message(reading_bytes("s9", 0, 50.0), key=b"s9")),
        classify(message(reading_bytes("s1", 0, 50.0), key=b"s2")),
        classify(message(b"")),
    ]
    assert [r.reason for r in reasons if isinstance(r, Rejection)] == [
        Reason.NEGATIVE_SPEED,
        Reason.UNKNOWN_SENSOR,
        Reason.KEY_MISMATCH,
        Reason.UNDECODABLE,
    ]


def test_an_open_window_keeps_the_latest_reading_per_event_time() -> None:
    def r(ms: int, speed: float | None, synthetic: bool = False) -> Reading:
        return Reading("s1", ms, speed, synthetic, message(None))

    window = open_window(r(0, 50.0))
    for later in (r(60_000, None), r(0, 55.0), r(120_000, 40.0, synthetic=True)):
        window = add_reading(window, later)
    assert window == {"readings": [[0, 55.0], [60_000, None], [120_000, 40.0]], "synthetic": True}
    record = aggregate_record({"start": 0, "end": 300_000, "value": window}, "s1", 7)
    assert record["speed_mean"] == 47.5 and record["reading_count"] == 3
    assert record["share_missing"] == pytest.approx(1 / 3)
    assert record["is_synthetic"] and record["emitted_at"] == 7

    missing = aggregate_record(
        {"start": 0, "end": 300_000, "value": open_window(r(0, None))}, "s1", 7
    )
    assert missing["speed_mean"] is None and missing["speed_std"] is None
    assert missing["quality_flag"] == w.MISSING and missing["congestion"] == w.UNKNOWN
    assert not any(isinstance(v, float) and math.isnan(v) for v in missing.values())
    assert np.isfinite(missing["share_missing"])
