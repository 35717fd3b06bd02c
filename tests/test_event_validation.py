"""Stream validation: every bad record is classified, good records around it are untouched."""

import math
import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from traffic_core.events import (
    RawMessage,
    ReadingValidator,
    Reason,
    Rejection,
    ValidationConfig,
    decode_any,
    encode_reading,
)

# Replay clock: validating 2012 data must not depend on the wall clock.
NOW = datetime(2012, 3, 1, 12, 0, tzinfo=UTC)
SENSORS = frozenset({"773869", "767541", "767542"})
CONFIG = ValidationConfig(known_sensors=SENSORS)


def reading(**overrides):
    base = {
        "sensor_id": "773869",
        "event_time": NOW - timedelta(minutes=5),
        "speed_mph": 61.25,
        "source": "metr-la",
    }
    return base | overrides


def avro(**overrides) -> bytes:
    return encode_reading(reading(**overrides))


def json(**overrides) -> bytes:
    record = reading(**overrides)
    if isinstance(record["event_time"], datetime):
        record["event_time"] = record["event_time"].isoformat()
    return orjson.dumps(record)


def without(field: str) -> bytes:
    record = reading(event_time=(NOW - timedelta(minutes=5)).isoformat())
    del record[field]
    return orjson.dumps(record)


def good(i: int) -> bytes:
    """Distinct valid readings (mixing Avro and JSON, missing speed included)."""
    sensor = sorted(SENSORS)[i % 3]
    at = NOW - timedelta(minutes=5 * (i + 1))
    speed = None if i % 4 == 3 else 40.0 + i
    return (avro if i % 2 else json)(sensor_id=sensor, event_time=at, speed_mph=speed)


BAD = {
    "undecodable_garbage": (b"\xde\xad\xbe\xef", Reason.UNDECODABLE),
    "undecodable_truncated": (avro()[:-3], Reason.UNDECODABLE),
    "undecodable_json": (b'{"sensor_id": ', Reason.UNDECODABLE),
    "empty": (b"", Reason.UNDECODABLE),
    "missing_field": (without("source"), Reason.MISSING_FIELD),
    "missing_speed_key": (without("speed_mph"), Reason.MISSING_FIELD),
    "wrong_type": (json(speed_mph="61.25"), Reason.WRONG_TYPE),
    "nan_speed": (avro(speed_mph=math.nan), Reason.NAN_SPEED),
    "negative_speed": (avro(speed_mph=-1.0), Reason.NEGATIVE_SPEED),
    "speed_too_high": (avro(speed_mph=120.5), Reason.SPEED_TOO_HIGH),
    "infinite_speed": (avro(speed_mph=math.inf), Reason.SPEED_TOO_HIGH),
    "unknown_sensor": (avro(sensor_id="999999"), Reason.UNKNOWN_SENSOR),
    "empty_sensor": (json(sensor_id=""), Reason.MISSING_FIELD),
    "future_timestamp": (avro(event_time=NOW + timedelta(days=1)), Reason.FUTURE_TIMESTAMP),
    "negative_volume": (avro(volume=-3), Reason.OUT_OF_RANGE),
    "occupancy_over_one": (avro(occupancy=1.5), Reason.OUT_OF_RANGE),
    "oversized": (json(correlation_id="x" * 70_000), Reason.OVERSIZED_MESSAGE),
    "unknown_schema_id": (b"\x00\x00\x00\x01\x00" + avro()[5:], Reason.UNKNOWN_SCHEMA_ID),
    "incident_schema_id": (b"\x00\x00\x00\x00\x02" + avro()[5:], Reason.UNKNOWN_SCHEMA_ID),
}


@pytest.mark.parametrize("name", BAD)
def test_each_bad_message_gets_its_reason(name):
    message, reason = BAD[name]
    valid, rejected = ReadingValidator(CONFIG).validate([message], now=NOW)
    assert valid == []
    assert [r.reason for r in rejected] == [reason]
    assert rejected[0].detail
    assert rejected[0].value is message


def test_bad_records_do_not_disturb_good_ones_around_them():
    goods = [good(i) for i in range(len(BAD) + 1)]
    duplicate = goods[0]
    batch, expected_reasons = [], []
    bads = [*BAD.values(), (duplicate, Reason.DUPLICATE_READING)]
    for g, (message, reason) in zip(goods, bads, strict=True):
        batch += [g, message]
        expected_reasons.append(reason)
    validator = ReadingValidator(CONFIG)

    valid, rejected = validator.validate(batch, now=NOW)

    assert valid == [decode_any(g) for g in goods]
    assert [r.reason for r in rejected] == expected_reasons
    assert [r.value for r in rejected] == [m for m in batch if m not in goods] + [duplicate]
    assert validator.accepted == len(goods)
    assert validator.rejected_by_reason[Reason.UNDECODABLE] == 4
    assert validator.rejected_by_reason[Reason.DUPLICATE_READING] == 1
    assert sum(validator.rejected_by_reason.values()) == len(rejected)


def test_missing_speed_is_valid_but_nan_is_not():
    validator = ReadingValidator(CONFIG)
    valid, rejected = validator.validate(
        [
            avro(speed_mph=None),
            json(speed_mph=None, sensor_id="767541"),
            avro(speed_mph=math.nan, sensor_id="767542"),
        ],
        now=NOW,
    )
    assert [r["speed_mph"] for r in valid] == [None, None]
    assert [r.reason for r in rejected] == [Reason.NAN_SPEED]


def test_limits_are_configurable():
    config = ValidationConfig(
        max_speed_mph=80.0,
        max_message_bytes=45,
        max_future_skew=timedelta(0),
        max_age=timedelta(hours=1),
    )
    cases = {
        Reason.SPEED_TOO_HIGH: avro(speed_mph=85.0),
        Reason.OVERSIZED_MESSAGE: avro(correlation_id="trace-0001"),
        Reason.FUTURE_TIMESTAMP: avro(event_time=NOW + timedelta(seconds=1)),
        Reason.TIMESTAMP_TOO_OLD: avro(event_time=NOW - timedelta(hours=2)),
    }
    rejected = ReadingValidator(config).validate(cases.values(), now=NOW).rejected
    assert [r.reason for r in rejected] == list(cases)
    assert ReadingValidator(config).validate([avro(event_time=NOW)], now=NOW).valid


def test_defaults_accept_any_sensor_and_old_replays():
    message = avro(sensor_id="999999", event_time=datetime(2012, 3, 1, tzinfo=UTC))
    valid, _ = ReadingValidator().validate([message], now=datetime(2026, 1, 1, tzinfo=UTC))
    assert valid[0]["sensor_id"] == "999999"


def test_duplicates_are_caught_across_batches_in_a_bounded_window():
    validator = ReadingValidator(ValidationConfig(dedup_window=2))
    first, second, third = (avro(event_time=NOW - timedelta(minutes=m)) for m in (5, 10, 15))
    assert validator.validate([first, second], now=NOW).rejected == []
    rejected = validator.validate([second, third, first], now=NOW).rejected
    # `first` was evicted when `third` arrived: only the two most recent keys are kept.
    assert [r.value for r in rejected] == [second]


def test_a_zero_window_switches_duplicate_rejection_off():
    validator = ReadingValidator(ValidationConfig(dedup_window=0))
    valid, rejected = validator.validate([avro(), avro()], now=NOW)
    assert len(valid) == 2 and rejected == []


def test_same_key_from_avro_and_json_is_a_duplicate():
    rejected = ReadingValidator(CONFIG).validate([avro(), json()], now=NOW).rejected
    assert [(r.reason, r.value) for r in rejected] == [(Reason.DUPLICATE_READING, json())]


def test_a_rejected_reading_does_not_block_its_correction():
    validator = ReadingValidator(CONFIG)
    valid, rejected = validator.validate([avro(speed_mph=500.0), avro(speed_mph=50.0)], now=NOW)
    assert [r["speed_mph"] for r in valid] == [50.0]
    assert [r.reason for r in rejected] == [Reason.SPEED_TOO_HIGH]


def test_kafka_metadata_reaches_the_dlq_record_untouched():
    class FakeKafkaMessage:
        def value(self):
            return b"\x00\x00\x00\x00\x01\xff"

        def key(self):
            return b"773869"

        def topic(self):
            return "traffic.readings"

        def partition(self):
            return 3

        def offset(self):
            return 1042

    raw = RawMessage.from_kafka(FakeKafkaMessage())
    (rejection,) = ReadingValidator(CONFIG).validate([raw], now=NOW).rejected
    at = datetime(2026, 5, 9, 7, 35, 25, 123456, tzinfo=UTC)

    record = rejection.to_dlq_record(rejected_at=at)

    assert (record.key, record.value) == (raw.key, raw.value)
    headers = dict(record.headers)
    assert headers["dlq.reason"] == b"UNDECODABLE"
    assert headers["dlq.detail"] == rejection.detail.encode()
    assert headers["dlq.source.topic"] == b"traffic.readings"
    assert headers["dlq.source.partition"] == b"3"
    assert headers["dlq.source.offset"] == b"1042"
    assert headers["dlq.rejected_at"] == b"2026-05-09T07:35:25.123Z"
    assert all(isinstance(v, bytes) for v in headers.values())


def test_dlq_record_omits_unknown_source_and_stamps_wall_clock():
    record = Rejection(Reason.OVERSIZED_MESSAGE, "too big", b"x" * 10).to_dlq_record()
    names = [name for name, _ in record.headers]
    assert names == ["dlq.reason", "dlq.detail", "dlq.rejected_at"]
    stamp = datetime.fromisoformat(dict(record.headers)["dlq.rejected_at"].decode())
    assert abs(stamp - datetime.now(UTC)) < timedelta(minutes=1)


def test_tombstones_are_rejected_not_raised():
    (rejection,) = ReadingValidator().validate([RawMessage(None, b"k")], now=NOW).rejected
    assert (rejection.reason, rejection.key) == (Reason.UNDECODABLE, b"k")


def test_naive_reference_time_is_a_programming_error():
    with pytest.raises(ValueError, match="timezone-aware"):
        ReadingValidator().validate([avro()], now=datetime(2012, 3, 1))


def test_fuzzed_messages_never_raise():
    rng = random.Random(20120301)
    seeds = [avro(), avro(speed_mph=None, volume=5, occupancy=0.5, ingest_id="run"), json()]
    batch = []
    for _ in range(3000):
        message = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            if not message:
                break
            action = rng.random()
            position = rng.randrange(len(message))
            if action < 0.5:
                message[position] = rng.randrange(256)
            elif action < 0.75:
                del message[position:]
            else:
                message[position:position] = rng.randbytes(rng.randint(1, 8))
        batch.append(bytes(message))
    batch += [rng.randbytes(rng.randint(0, 80)) for _ in range(1000)]
    validator = ReadingValidator(CONFIG)

    valid, rejected = validator.validate(batch, now=NOW)

    assert len(valid) + len(rejected) == len(batch)
    assert all(isinstance(r.reason, Reason) for r in rejected)
    for record in valid:  # whatever slipped through is a well-formed, in-range reading
        assert record["sensor_id"] in SENSORS
        assert record["speed_mph"] is None or 0 <= record["speed_mph"] <= 120
        assert record["event_time"] <= NOW + CONFIG.max_future_skew
