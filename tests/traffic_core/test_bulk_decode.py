"""The columnar fast path agrees with the per-message validator on random batches, and declines
(returns None) for every batch the per-message path must classify itself."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest
from confluent_kafka import Message

from traffic_core.events import (
    RawMessage,
    ReadingValidator,
    ValidationConfig,
    encode_reading,
)
from traffic_core.events.bulk import decode_readings_columnar, validate_columns
from traffic_core.events.codec import HEADER, MAGIC
from traffic_core.ingestion.ranges import classify_range, readings_table
from traffic_core.lake import OffsetRange

NOW = datetime(2012, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
SENSORS = ["773869", "767541", "δ-7", "测试🚦", ""]
STORED = ["sensor_id", "event_time", "speed_mph", "volume", "occupancy", "source", "is_synthetic"]
RANGE = OffsetRange("events", 3, 100, 100_000)


def kafka_message(value: bytes | None, offset: int) -> Message:
    return Message(
        topic=RANGE.topic,
        partition=RANGE.partition,
        offset=offset,
        key=b"k%d" % offset,
        value=value,
    )


def random_reading(rng: random.Random) -> dict:
    return {
        "sensor_id": rng.choice(SENSORS),
        "event_time": rng.choice([NOW, NOW, NOW, NOW - timedelta(days=2), NOW + timedelta(days=1)])
        + timedelta(minutes=rng.randint(-12, 7), milliseconds=rng.choice([0, 1])),
        "speed_mph": rng.choice(
            [None, None, 61.25, 0.0, -0.0, 120.0, 120.5, -1.0, float("nan"), float("inf")]
        ),
        "volume": rng.choice([None, None, 0, 17, -1, 2**31 - 1, -(2**31)]),
        "occupancy": rng.choice([None, None, 0.0, 0.4, 1.0, 1.01, -0.1, float("nan")]),
        "source": rng.choice(["metr-la", "synthetic", "ápi"]),
        "is_synthetic": rng.random() < 0.5,
        "ingest_id": rng.choice([None, "run-1", "ŕun"]),
        "correlation_id": rng.choice([None, "c" * rng.randint(0, 200)]),
    }


def random_config(rng: random.Random) -> ValidationConfig:
    return ValidationConfig(
        max_speed_mph=rng.choice([120.0, 130.0]),
        known_sensors=rng.choice([None, frozenset(SENSORS[:3]), frozenset(SENSORS)]),
        max_future_skew=timedelta(minutes=rng.choice([0, 5])),
        max_age=rng.choice([None, timedelta(minutes=10)]),
        dedup_window=rng.choice([1, 3, 100_000]),
        event_time_floor=rng.choice([None, NOW - timedelta(days=1), NOW - timedelta(minutes=3)]),
        allowed_lateness=rng.choice([None, timedelta(0), timedelta(minutes=4), timedelta(days=1)]),
        partition_days=rng.choice(
            [None, (NOW.date(), NOW.date()), (NOW.date() - timedelta(days=2), NOW.date())]
        ),
    )


def same_as_validator(values: list[bytes], config: ValidationConfig) -> None:
    messages = [kafka_message(v, RANGE.first + 2 * i) for i, v in enumerate(values)]
    result = ReadingValidator(config).validate(map(RawMessage.from_kafka, messages), now=NOW)
    rejected = {r.offset for r in result.rejected}
    kept = [m.offset() for m in messages if m.offset() not in rejected]

    readings = decode_readings_columnar(values, config.max_message_bytes)
    assert readings is not None
    verdict = validate_columns(readings, config, NOW)
    fast_valid = [readings.record(i) for i in np.flatnonzero(verdict.accepted)]
    assert fast_valid == [{k: r[k] for k in STORED} for r in result.valid]

    classified = classify_range(messages, RANGE, config, NOW)
    assert classified.rejected == result.rejected
    assert sum(classified.counts.values()) == len(result.rejected)
    assert classified.table.equals(readings_table(result.valid, RANGE, kept), check_metadata=True)


@pytest.mark.parametrize("seed", range(60))
def test_random_batches_match_the_per_message_validator(seed: int) -> None:
    rng = random.Random(seed)
    values = [encode_reading(random_reading(rng)) for _ in range(rng.randint(1, 300))]
    same_as_validator(values, random_config(rng))


def test_clean_batches_with_repeats_and_window_evictions() -> None:
    rng = random.Random(7)
    records = [
        random_reading(rng) | {"speed_mph": 50.0, "volume": None, "occupancy": None}
        for _ in range(2000)
    ]
    values = [encode_reading(r | {"sensor_id": SENSORS[i % 2]}) for i, r in enumerate(records)]
    for window in (1, 2, 5, 40, 100_000):
        same_as_validator(values, ValidationConfig(dedup_window=window))


def test_all_fields_present_keep_their_dtypes() -> None:
    rng = random.Random(3)
    values = [
        encode_reading(random_reading(rng) | {"volume": 5, "occupancy": 0.5, "speed_mph": 1.0})
        for _ in range(50)
    ]
    same_as_validator(values, ValidationConfig())


def _good(i: int) -> bytes:
    return encode_reading(
        {
            "sensor_id": "773869",
            "event_time": NOW - timedelta(minutes=5 * i),
            "speed_mph": 60.0,
            "source": "metr-la",
        }
    )


def _patched(old: bytes, new: bytes) -> bytes:
    value = encode_reading(
        {"sensor_id": "ab", "event_time": NOW, "speed_mph": 60.0, "source": "metr-la"}
    )
    assert value.count(old) == 1
    return value.replace(old, new)


def _with_tail(**fields: object) -> bytes:
    record = {"sensor_id": "s", "event_time": NOW, "speed_mph": 1.0, "source": "x"}
    return encode_reading(record | fields)


BAD = {
    "json": orjson.dumps({"sensor_id": "773869", "event_time": 0, "speed_mph": 1.0}),
    "other schema": HEADER.pack(MAGIC, 2) + _good(0)[5:],
    "unregistered schema id": b"\x00\x00\x00\x00\x63" + _good(0)[5:],
    "truncated": _good(0)[:-1],
    "trailing byte": _good(0) + b"\x00",
    "header only": _good(0)[:5],
    "empty": b"",
    "tombstone": None,
    "oversized": _with_tail(ingest_id="x" * 70_000),
    "invalid utf-8": _patched(b"ab", b"\xff\xfe"),
    "surrogate": _patched(b"\x04ab", b"\x06\xed\xa0\x80"),
    "bad union branch": _patched(b"\x02\x00\x00\x00\x00\x00\x00\x4e\x40", b"\x04" + bytes(8)),
    "bad boolean": _with_tail()[:-3] + b"\x02\x00\x00",
    "string past the end": _with_tail()[:5] + b"\x7e" + _with_tail()[6:],
    "11-byte varint": _with_tail()[:7] + b"\xff" * 10 + b"\x01" + _with_tail()[13:],
}


@pytest.mark.parametrize("name", BAD)
def test_one_odd_message_sends_the_batch_to_the_per_message_path(name: str) -> None:
    batch = [_good(1), _good(2), BAD[name], _good(3)]
    assert decode_readings_columnar([_good(1), _good(2), _good(3)]) is not None
    assert decode_readings_columnar(batch) is None
    messages = [RawMessage(v, offset=i) for i, v in enumerate(batch)]
    (rejection,) = ReadingValidator().validate(messages, now=NOW).rejected
    assert rejection.offset == 2
