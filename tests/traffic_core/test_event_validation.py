"""Stream validation: every bad record is classified, good records around it are untouched."""

import base64
import hashlib
import math
import random
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traffic_core.events import (
    EVENT_TIME_FLOOR,
    EventCodec,
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


# Rules against hostile values, on generated input -------------------------------------------

LATE_NOW = datetime(2100, 1, 1, tzinfo=UTC)
"""A clock after every generated time, so only the rule under test can reject."""
ANY_TIME = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))


def only(reason: Reason, config: ValidationConfig, messages: list[bytes]) -> list[bool]:
    """Which messages were accepted; every reject must be for `reason`."""
    validator = ReadingValidator(config)
    verdicts = []
    for message in messages:
        valid, rejected = validator.validate([message], now=LATE_NOW)
        assert [r.reason for r in rejected] in ([], [reason])
        verdicts.append(bool(valid))
    return verdicts


@settings(derandomize=True, database=None, deadline=None, max_examples=200)
@given(at=ANY_TIME, floor=ANY_TIME)
def test_event_times_before_the_floor_are_rejected(at: datetime, floor: datetime) -> None:
    config = ValidationConfig(event_time_floor=floor)
    assert only(Reason.TIMESTAMP_BEFORE_FLOOR, config, [avro(event_time=at)]) == [at >= floor]


def test_the_default_floor_is_metr_la_first_day() -> None:
    assert datetime(2012, 3, 1, tzinfo=UTC) == EVENT_TIME_FLOOR
    for at in (datetime(1900, 1, 1, tzinfo=UTC), datetime(1969, 12, 31, 23, tzinfo=UTC)):
        (rejection,) = ReadingValidator().validate([avro(event_time=at)], now=NOW).rejected
        assert rejection.reason == Reason.TIMESTAMP_BEFORE_FLOOR


@settings(derandomize=True, database=None, deadline=None, max_examples=200)
@given(at=ANY_TIME, first=st.dates(), days=st.integers(0, 400))
def test_readings_outside_the_partitions_are_rejected(at: datetime, first, days: int) -> None:
    last = first + timedelta(days=days)
    config = ValidationConfig(event_time_floor=None, partition_days=(first, last))
    inside = first <= at.date() <= last
    assert only(Reason.OUTSIDE_PARTITIONS, config, [avro(event_time=at)]) == [inside]


@settings(derandomize=True, database=None, deadline=None, max_examples=200)
@given(
    minutes=st.lists(st.integers(0, 30 * 24 * 60), min_size=1, max_size=40),
    lateness=st.integers(0, 10 * 24 * 60),
)
def test_readings_too_far_behind_the_watermark_are_late(minutes: list[int], lateness: int) -> None:
    """Model (one sensor): the watermark is the sensor's latest accepted event time; a reading
    more than the allowed lateness behind it is LATE_READING and leaves the watermark as it was."""
    times = [NOW + timedelta(minutes=m, milliseconds=i) for i, m in enumerate(minutes)]
    config = ValidationConfig(allowed_lateness=timedelta(minutes=lateness), dedup_window=0)
    expected, watermark = [], None
    for at in times:
        ok = watermark is None or watermark - at <= timedelta(minutes=lateness)
        expected.append(ok)
        if ok:
            watermark = max(watermark or at, at)
    assert only(Reason.LATE_READING, config, [avro(event_time=t) for t in times]) == expected


def test_a_reading_forged_far_ahead_holds_back_only_its_own_sensor() -> None:
    """The watermark is per sensor: one valid-looking reading stamped years ahead makes later
    readings of that sensor late, never those of every other sensor in the batch."""
    config = ValidationConfig(allowed_lateness=timedelta(hours=1), dedup_window=0)
    forged = avro(sensor_id="773869", event_time=NOW + timedelta(days=3000))
    rest = [avro(sensor_id=s, event_time=NOW) for s in ("773869", "767541", "767542")]
    assert only(Reason.LATE_READING, config, [forged, *rest]) == [True, False, True, True]


UNKNOWN_NAMES = st.text(min_size=1, max_size=80).filter(
    lambda n: n not in {f["name"] for f in EventCodec().schema["fields"]}
)


@settings(derandomize=True, database=None, deadline=None, max_examples=150)
@given(
    extra=st.dictionaries(UNKNOWN_NAMES, st.integers(-(2**53), 2**53) | st.text(), max_size=30),
    policy=st.sampled_from(["count", "reject"]),
)
def test_unknown_json_fields_follow_the_declared_policy(extra: dict, policy: str) -> None:
    record = reading(event_time=(NOW - timedelta(minutes=5)).isoformat()) | extra
    validator = ReadingValidator(ValidationConfig(unknown_fields=policy))
    valid, rejected = validator.validate([orjson.dumps(record)], now=NOW)
    if not extra:
        assert len(valid) == 1 and validator.with_unknown_fields == 0
    elif policy == "count":
        assert len(valid) == 1 and validator.with_unknown_fields == 1
        assert sum(validator.unknown_field_names.values()) == len(extra)
        assert len(validator.unknown_field_names) <= 21  # bounded whatever the sender sends
    else:
        assert [r.reason for r in rejected] == [Reason.UNKNOWN_FIELD]
        assert len(rejected[0].detail) < 600


@settings(derandomize=True, database=None, deadline=None, max_examples=200)
@given(
    value=st.binary(max_size=3000) | st.none(),
    key=st.binary(max_size=600) | st.none(),
    limit=st.integers(0, 2000),
    detail=st.text(max_size=2000),
)
def test_dlq_records_are_bounded_and_name_their_original(
    value: bytes | None, key: bytes | None, limit: int, detail: str
) -> None:
    rejection = Rejection(Reason.OVERSIZED_MESSAGE, detail, value, key, "events", 4, 99)
    record = rejection.to_dlq_record(max_record_bytes=limit)
    size = len(value or b"") + len(key or b"")
    headers = dict(record.headers)
    assert len(headers["dlq.detail"].decode()) <= 500
    if size <= limit:
        assert (record.key, record.value) == (key, value)
        assert b"dlq.payload" not in headers
        return
    assert headers["dlq.payload"] == b"reference"
    assert len(record.value) < 4096 and len(record.key or b"") <= 256
    reference = orjson.loads(record.value)
    original = value or b""
    assert (reference["topic"], reference["partition"], reference["offset"]) == ("events", 4, 99)
    assert reference["size"] == len(original) == int(headers["dlq.original.size"])
    assert reference["sha256"] == hashlib.sha256(original).hexdigest()
    assert original.startswith(base64.b64decode(reference["prefix_base64"]))
    assert reference["reason"] == "OVERSIZED_MESSAGE"


OFFSETS = st.builds(
    timezone,
    st.timedeltas(
        min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)
    ),
)


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(at=st.datetimes(min_value=datetime.min, max_value=datetime.max, timezones=OFFSETS))
def test_any_iso_time_with_any_offset_is_classified_never_raised(at: datetime) -> None:
    """Times at the ends of the calendar whose offset moves them past year 1 or 9999 in UTC
    (0001-01-01T00:00+00:01) are the record's problem, not the validator's."""
    message = json(event_time=at.isoformat())
    valid, rejected = ReadingValidator().validate([message], now=LATE_NOW)
    assert len(valid) + len(rejected) == 1
    for edge in ("0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-01:00"):
        (reject,) = ReadingValidator().validate([json(event_time=edge)], now=LATE_NOW).rejected
        assert reject.reason is Reason.WRONG_TYPE
