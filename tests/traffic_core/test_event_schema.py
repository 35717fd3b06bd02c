"""Schema contracts, compatibility checks and the Avro/JSON codec."""

import copy
import io
import itertools
import math
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from fastavro import schemaless_reader, schemaless_writer

from traffic_core.events import (
    INCIDENT,
    READING,
    SCHEMA_IDS,
    WEATHER,
    DecodeError,
    EncodeError,
    EventCodec,
    Reason,
    SchemaRegistry,
    check_compatibility,
    decode,
    decode_any,
    decode_json,
    decode_many,
    encode_reading,
    encode_readings,
    load_event_schema,
    schema_files,
    speed_from_metr_la,
)

T0 = datetime(2012, 3, 1, 8, 5, tzinfo=UTC)
READING_V1 = load_event_schema(READING, 1)


def reading(**overrides):
    base = {
        "sensor_id": "773869",
        "event_time": T0,
        "speed_mph": 64.375,
        "volume": None,
        "occupancy": None,
        "source": "metr-la",
        "is_synthetic": False,
        "ingest_id": None,
        "correlation_id": None,
    }
    return base | overrides


EDGE_READINGS = [
    reading(),
    reading(speed_mph=None),
    reading(speed_mph=0.0, volume=0, occupancy=0.0),
    reading(speed_mph=119.999, volume=2**31 - 1, occupancy=1.0, is_synthetic=True),
    reading(sensor_id="s-ü-東京" * 20, source="api", ingest_id="run-1", correlation_id="c" * 300),
    reading(event_time=datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC), volume=-1),
    reading(event_time=datetime(2030, 1, 1, tzinfo=UTC), speed_mph=-3.5, volume=64),
]


def fastavro_body(schema, record):
    buffer = io.BytesIO()
    schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


# Schema files and registry ---------------------------------------------------------------------


def test_every_schema_file_has_exactly_one_stable_wire_id():
    on_disk = {(s, v) for s, versions in schema_files().items() for v in versions}
    assert on_disk == set(SCHEMA_IDS.values())
    assert len(set(SCHEMA_IDS.values())) == len(SCHEMA_IDS)
    assert SCHEMA_IDS[1] == (READING, 1)


@pytest.mark.parametrize("subject", [READING, INCIDENT, WEATHER])
def test_schemas_load_in_the_project_namespace(subject):
    schema = load_event_schema(subject, schema_files()[subject][-1])
    assert schema["name"].startswith("la.metr.traffic.")


def test_reading_contract_makes_missing_speed_explicit():
    fields = {f["name"]: f for f in READING_V1["fields"]}
    assert fields["speed_mph"]["type"] == ["null", "double"]
    assert "default" not in fields["speed_mph"]  # producers must say null, not omit it
    assert fields["event_time"]["type"]["logicalType"] == "timestamp-millis"
    assert fields["is_synthetic"]["default"] is False
    for name in ("volume", "occupancy", "ingest_id", "correlation_id"):
        assert fields[name]["default"] is None


@pytest.mark.parametrize("raw, expected", [(0.0, None), (math.nan, None), (61.5, 61.5)])
def test_metr_la_zero_speed_means_missing(raw, expected):
    assert speed_from_metr_la(raw) == expected


def test_registry_refuses_reused_ids_and_versions():
    registry = SchemaRegistry()
    registry.register(1, READING, 1, READING_V1)
    with pytest.raises(ValueError, match="id 1"):
        registry.register(1, WEATHER, 1, load_event_schema(WEATHER, 1))
    with pytest.raises(ValueError, match="v1"):
        registry.register(2, READING, 1, READING_V1)
    assert registry.latest(READING).schema_id == 1
    with pytest.raises(KeyError):
        registry.latest(INCIDENT)


# Compatibility -------------------------------------------------------------------------------


def evolve(schema, *edits):
    """A raw copy of `schema` with field-level edits: (name, new_field_or_None) or ("+", field)."""
    raw = copy.deepcopy({k: v for k, v in schema.items() if not k.startswith("__")})
    for name, new in edits:
        fields = raw["fields"]
        if name == "+":
            fields.append(new)
        else:
            index = next(i for i, f in enumerate(fields) if f["name"] == name)
            fields[index : index + 1] = [] if new is None else [new]
    return raw


def reading_v2():
    """A plausible next version: one widened field, one new optional field, one rename."""
    return evolve(
        READING_V1,
        ("volume", {"name": "volume", "type": ["null", "long"], "default": None}),
        ("+", {"name": "lane_count", "type": ["null", "int"], "default": None}),
        (
            "ingest_id",
            {
                "name": "batch_id",
                "type": ["null", "string"],
                "default": None,
                "aliases": ["ingest_id"],
            },
        ),
    )


def test_consecutive_schema_versions_are_backward_compatible():
    for subject, versions in schema_files().items():
        for old in versions:  # a schema must at least read its own data
            assert (
                check_compatibility(
                    load_event_schema(subject, old), load_event_schema(subject, old)
                )
                == []
            )
        for old, new in itertools.pairwise(versions):
            problems = check_compatibility(
                load_event_schema(subject, old), load_event_schema(subject, new)
            )
            assert problems == [], f"{subject} v{old} -> v{new}: {problems}"


def test_compatible_evolution_is_accepted():
    assert check_compatibility(READING_V1, reading_v2()) == []


@pytest.mark.parametrize(
    "edit, expected",
    [
        (("+", {"name": "lane_count", "type": "int"}), "$.lane_count: new field has no default"),
        (
            ("speed_mph", {"name": "speed_mph", "type": ["null", "string"]}),
            "$.speed_mph: writer type double matches no reader union branch",
        ),
        (
            ("speed_mph", {"name": "speed_mph", "type": "double"}),
            "$.speed_mph: writer union branch null is not readable as double",
        ),
        (("volume", {"name": "volume", "type": ["null", "float"], "default": None}), None),
        (
            ("occupancy", {"name": "occupancy", "type": ["null", "int"], "default": None}),
            "$.occupancy: writer type double matches no reader union branch",
        ),
        (
            (
                "event_time",
                {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            ),
            "$.event_time: logical type changed from timestamp-millis to timestamp-micros",
        ),
        (("sensor_id", None), None),
    ],
)
def test_reading_changes_are_classified(edit, expected):
    problems = check_compatibility(READING_V1, evolve(READING_V1, edit))
    if expected is None:
        assert problems == []
    else:
        assert expected in problems


def test_round_trip_catches_runtime_failures_too():
    problems = check_compatibility(
        READING_V1, evolve(READING_V1, ("speed_mph", {"name": "speed_mph", "type": "double"}))
    )
    assert any("reader failed" in p for p in problems)  # proven on bytes, not only by rules


def test_record_rename_needs_alias():
    renamed = evolve(READING_V1) | {"name": "la.metr.traffic.Reading"}
    assert any("renamed" in p for p in check_compatibility(READING_V1, renamed))
    assert check_compatibility(READING_V1, renamed | {"aliases": ["TrafficReading"]}) == []
    elsewhere = renamed | {"name": "Reading", "aliases": ["TrafficReading"]}
    assert any("renamed" in p for p in check_compatibility(READING_V1, elsewhere))


def test_enum_symbol_removal_needs_enum_default():
    incident = load_event_schema(INCIDENT, 1)
    severity = next(f for f in incident["fields"] if f["name"] == "severity")["type"]
    fewer = {k: v for k, v in severity.items() if not k.startswith("__")}
    fewer["symbols"] = ["UNKNOWN", "MINOR", "MAJOR"]
    assert (
        check_compatibility(
            incident, evolve(incident, ("severity", {"name": "severity", "type": fewer}))
        )
        == []
    )
    no_default = {k: v for k, v in fewer.items() if k != "default"}
    problems = check_compatibility(
        incident, evolve(incident, ("severity", {"name": "severity", "type": no_default}))
    )
    assert any("enum symbols removed without default" in p for p in problems)


# Avro codec ------------------------------------------------------------------------------------


def test_messages_use_the_confluent_wire_format():
    message = encode_reading(reading())
    assert message[0] == 0
    assert int.from_bytes(message[1:5], "big") == 1
    assert len(message) < 60


@pytest.mark.parametrize("record", EDGE_READINGS)
def test_avro_round_trip_matches_fastavro_byte_for_byte(record):
    message = encode_reading(record)
    assert message[5:] == fastavro_body(READING_V1, record)
    assert decode(message) == record
    assert decode(message) == schemaless_reader(io.BytesIO(message[5:]), READING_V1)


def test_missing_speed_stays_none_and_zero_stays_zero():
    assert decode(encode_reading(reading(speed_mph=None)))["speed_mph"] is None
    assert decode(encode_reading(reading(speed_mph=0.0)))["speed_mph"] == 0.0


def test_encoder_fills_defaults_but_requires_explicit_speed():
    minimal = {"sensor_id": "773869", "event_time": T0, "speed_mph": None, "source": "api"}
    assert decode(encode_reading(minimal)) == reading(speed_mph=None, source="api")
    with pytest.raises(EncodeError, match="speed_mph"):
        encode_reading({k: v for k, v in minimal.items() if k != "speed_mph"})


@pytest.mark.parametrize(
    "override, match",
    [
        ({"event_time": datetime(2012, 3, 1, 8, 5)}, "event_time"),  # naive = LA local? refuse
        ({"speed_mph": "64"}, "speed_mph"),
        ({"volume": 2**31}, "volume"),
        ({"volume": 3.0}, "volume"),
        ({"sensor_id": 773869}, "sensor_id"),
        ({"is_synthetic": 1}, "is_synthetic"),
    ],
)
def test_encoder_rejects_records_that_do_not_fit(override, match):
    with pytest.raises(EncodeError, match=match):
        encode_reading(reading(**override))


def test_epoch_millis_and_datetimes_encode_identically():
    millis = int(T0.timestamp() * 1000)
    assert encode_reading(reading(event_time=millis)) == encode_reading(reading())
    pacific = T0.astimezone(timezone(timedelta(hours=-8)))
    assert encode_reading(reading(event_time=pacific)) == encode_reading(reading())


def test_bulk_helpers_keep_order_and_report_failures_by_index():
    messages = encode_readings(EDGE_READINGS)
    records, failures = decode_many(
        [*messages[:2], b"\x00\x00\x00\x00\x01\xff", *messages[2:], b"nope"]
    )
    assert records == EDGE_READINGS
    assert failures == [(2, Reason.UNDECODABLE), (len(EDGE_READINGS) + 1, Reason.UNDECODABLE)]


@pytest.mark.parametrize(
    "message, reason",
    [
        (b"", Reason.UNDECODABLE),
        (b"\x00\x00\x00", Reason.UNDECODABLE),
        (b"\x01\x00\x00\x00\x01", Reason.UNDECODABLE),
        (b"\x00\x00\x00\x00\x63" + encode_reading(reading())[5:], Reason.UNKNOWN_SCHEMA_ID),
        (b"\x00\x00\x00\x00\x03" + encode_reading(reading())[5:], Reason.UNKNOWN_SCHEMA_ID),
        (encode_reading(reading())[:-1], Reason.UNDECODABLE),
        (encode_reading(reading()) + b"\x00", Reason.UNDECODABLE),
        (b"\x00\x00\x00\x00\x01" + b"\xff" * 60_000, Reason.UNDECODABLE),  # endless varint
        (b"\x00\x00\x00\x00\x01" + b"\xff" * 9 + b"\x7f", Reason.UNDECODABLE),  # > 64 bits
    ],
)
def test_decode_errors_carry_a_reason(message, reason):
    with pytest.raises(DecodeError) as info:
        decode(message)
    assert info.value.reason is reason


def test_older_versions_are_resolved_to_the_latest():
    registry = SchemaRegistry()
    registry.register(1, READING, 1, READING_V1)
    registry.register(7, READING, 2, reading_v2())
    codec = EventCodec(READING, registry)
    old_message = encode_reading(reading(volume=12, ingest_id="run-9"))
    upgraded = codec.decode(old_message)
    assert upgraded["volume"] == 12
    assert upgraded["batch_id"] == "run-9"  # renamed through the alias
    assert upgraded["lane_count"] is None  # new field takes its default
    new_message = codec.encode(upgraded)
    assert int.from_bytes(new_message[1:5], "big") == 7
    assert codec.decode(new_message) == upgraded


@pytest.mark.parametrize(
    "subject, record",
    [
        (
            INCIDENT,
            {
                "incident_id": "i-1",
                "sensor_id": "773869",
                "start_time": T0,
                "end_time": None,
                "severity": "MAJOR",
                "affected_sensors": ["773869", "767541"],
                "source": "chp",
                "is_synthetic": False,
            },
        ),
        (
            WEATHER,
            {
                "station_id": "KLAX",
                "observed_at": T0,
                "temperature_c": 14.5,
                "precipitation_mm": None,
                "visibility_km": 16.0,
                "source": "noaa",
                "is_synthetic": True,
            },
        ),
    ],
)
def test_other_event_types_round_trip(subject, record):
    codec = EventCodec(subject)
    message = codec.encode(record)
    assert message[5:] == fastavro_body(load_event_schema(subject, 1), record)
    assert codec.decode(message) == record


# JSON input ------------------------------------------------------------------------------------


def as_json(record, **overrides):
    return orjson.dumps(record | overrides)


@pytest.mark.parametrize(
    "event_time",
    [
        "2012-03-01T08:05:00Z",
        "2012-03-01T00:05:00-08:00",
        "2012-03-01T08:05:00.000+00:00",
        int(T0.timestamp() * 1000),
    ],
)
def test_json_round_trip_matches_avro(event_time):
    assert decode_json(as_json(reading(), event_time=event_time)) == reading()


def test_json_fills_defaults_and_keeps_null_speed():
    minimal = {
        "sensor_id": "773869",
        "event_time": "2012-03-01T08:05:00Z",
        "speed_mph": None,
        "source": "metr-la",
    }
    assert decode_json(orjson.dumps(minimal)) == reading(speed_mph=None)
    assert decode_json(as_json(reading(), speed_mph=65))["speed_mph"] == 65.0


def test_json_truncates_timestamps_to_milliseconds_like_avro():
    record = decode_json(as_json(reading(), event_time="2012-03-01T08:05:00.123456Z"))
    assert record["event_time"] == T0 + timedelta(milliseconds=123)
    assert decode(encode_reading(record)) == record


@pytest.mark.parametrize(
    "override, reason",
    [
        ({"event_time": "2012-03-01T08:05:00"}, Reason.WRONG_TYPE),  # no offset: ambiguous
        ({"event_time": "yesterday"}, Reason.WRONG_TYPE),
        ({"event_time": 1.5e12}, Reason.WRONG_TYPE),
        ({"speed_mph": "64"}, Reason.WRONG_TYPE),
        ({"speed_mph": True}, Reason.WRONG_TYPE),
        ({"volume": 1.5}, Reason.WRONG_TYPE),
        ({"sensor_id": 773869}, Reason.WRONG_TYPE),
        ({"is_synthetic": "false"}, Reason.WRONG_TYPE),
        ({"source": None}, Reason.WRONG_TYPE),
    ],
)
def test_json_type_errors(override, reason):
    with pytest.raises(DecodeError) as info:
        decode_json(as_json(reading(), **override))
    assert info.value.reason is reason


@pytest.mark.parametrize("field", ["sensor_id", "event_time", "speed_mph", "source"])
def test_json_required_fields(field):
    without = {k: v for k, v in reading().items() if k != field}
    with pytest.raises(DecodeError) as info:
        decode_json(orjson.dumps(without))
    assert info.value.reason is Reason.MISSING_FIELD
    assert field in info.value.detail


@pytest.mark.parametrize("message", [b"{", b"[1, 2]", b'{"speed_mph": NaN}'])
def test_malformed_json_is_undecodable(message):
    with pytest.raises(DecodeError) as info:
        decode_json(message)
    assert info.value.reason is Reason.UNDECODABLE


def test_decode_any_detects_the_format():
    assert decode_any(encode_reading(reading())) == reading()
    assert decode_any(b"  \n" + as_json(reading())) == reading()
    with pytest.raises(DecodeError):
        decode_any(b"773869,2012-03-01,64.4")
