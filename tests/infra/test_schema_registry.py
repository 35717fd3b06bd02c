"""The registry service against Confluent's own clients: our events decode with nothing but its
URL, incompatible changes are refused, and codecs ask it once, not per message."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from conftest import PORT_SHIFT
from kafka_helpers import fresh_topics, read_all

from infra.stack.kafka import KafkaBroker
from infra.stack.web import registry_service
from traffic_core.events import (
    READING,
    SCHEMA_IDS,
    TOPIC_SCHEMAS,
    EventCodec,
    Reason,
    RemoteSchemaRegistry,
)
from traffic_core.events.bulk import decode_readings_columnar
from traffic_core.events.registry_client import (
    RegistryHttp,
    register_event_schemas,
    registry_subject,
    schema_text,
)
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds
from traffic_core.kafka.topics import TRAFFIC_EVENTS

pytestmark = pytest.mark.integration

SUBJECT = registry_subject(TRAFFIC_EVENTS)
BUILT_IN_READING_ID = next(i for i, (name, _) in SCHEMA_IDS.items() if name == READING)


def requests_served(url: str) -> float:
    """Requests the registry has answered so far (its Prometheus counter, all routes)."""
    text = httpx.get(f"{url}/metrics").text
    return sum(
        float(v) for v in re.findall(r"^schema_registry_requests_total\{.*\} (\S+)$", text, re.M)
    )


def test_a_plain_confluent_consumer_decodes_our_readings(
    kafka_broker: KafkaBroker, schema_registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAFFIC_SCHEMA_REGISTRY_URL", schema_registry)
    events, dlq = fresh_topics(kafka_broker, partitions=2)
    times = pd.date_range("2012-03-01", periods=6, freq="5min", tz="UTC")
    speeds = pd.DataFrame(
        {"773869": [61.5, np.nan, 30.25, 64.0, 65.5, 12.0], "767541": 55.0}, times
    )
    sink = ReadingProducer(kafka_broker.bootstrap_servers, topic=events, dlq_topic=dlq)
    summary = replay_speeds(speeds, sink, source="test", is_synthetic=True)
    assert summary.events == 12

    messages = read_all(kafka_broker, events, expected=12)
    registry_id = SchemaRegistryClient({"url": schema_registry}).get_version(SUBJECT, 1).schema_id
    assert registry_id != BUILT_IN_READING_ID  # the registry's id, not the built-in one
    assert {int.from_bytes(m.value()[1:5], "big") for m in messages} == {registry_id}

    deserialize = AvroDeserializer(SchemaRegistryClient({"url": schema_registry}))
    context = SerializationContext(events, MessageField.VALUE)
    plain = [deserialize(m.value(), context) for m in messages]
    ours = [EventCodec(READING).decode(m.value()) for m in messages]
    assert len(plain) == 12
    for record, expected in zip(plain, ours, strict=True):
        assert record["sensor_id"] == expected["sensor_id"]
        assert record["event_time"] == expected["event_time"]
        assert record["speed_mph"] == expected["speed_mph"]
        assert record["ingest_id"] == summary.ingest_id
    assert {(r["sensor_id"], r["event_time"]) for r in plain} == {
        (s, t.to_pydatetime()) for s in speeds.columns for t in times
    }


def test_an_incompatible_change_is_refused_with_409(schema_registry: str) -> None:
    client = SchemaRegistryClient({"url": schema_registry})
    versions = client.get_versions(SUBJECT)
    reading = json.loads(schema_text(READING, 1))
    breaking = {**reading, "fields": [*reading["fields"], {"name": "lane", "type": "int"}]}
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(SUBJECT, Schema(json.dumps(breaking), "AVRO"))
    assert refused.value.http_status_code == 409
    assert client.get_versions(SUBJECT) == versions
    assert client.get_compatibility(SUBJECT) == "BACKWARD"

    additive = {
        **reading,
        "fields": [*reading["fields"], {"name": "lane", "type": ["null", "int"], "default": None}],
    }
    assert client.test_compatibility(SUBJECT, Schema(json.dumps(additive), "AVRO"))


def test_codecs_ask_the_registry_once_not_per_message(schema_registry: str) -> None:
    registry = RemoteSchemaRegistry(RegistryHttp(schema_registry))
    codec = EventCodec(READING, registry)
    at = datetime(2012, 3, 1, tzinfo=UTC)
    values = [
        codec.encode(
            {
                "sensor_id": str(i),
                "event_time": at,
                "speed_mph": 60.0,
                "source": "t",
                "is_synthetic": True,
            }
        )
        for i in range(2000)
    ]
    unknown = b"\x00" + (999_999).to_bytes(4, "big") + values[0][5:]

    before = requests_served(schema_registry)
    assert [codec.decode(v)["sensor_id"] for v in values] == [str(i) for i in range(2000)]
    columns = decode_readings_columnar(values, registry=registry)
    assert columns is not None and len(columns) == 2000
    assert requests_served(schema_registry) == before

    failures = codec.decode_many([unknown] * 500)[1]
    assert len(failures) == 500
    assert requests_served(schema_registry) == before + 1  # asked once, then remembered

    made_up = [b"\x00" + (1_000_000 + i).to_bytes(4, "big") + values[0][5:] for i in range(500)]
    assert {reason for _, reason in codec.decode_many(made_up)[1]} == {Reason.UNKNOWN_SCHEMA_ID}
    assert requests_served(schema_registry) == before + registry.max_asks  # the budget, no more


def test_a_newer_producers_version_is_fetched_once_and_read_as_ours(schema_registry: str) -> None:
    reading = json.loads(schema_text(READING, 1))
    newer = {
        **reading,
        "fields": [*reading["fields"], {"name": "lane", "type": ["null", "int"], "default": None}],
    }
    newer_id = SchemaRegistryClient({"url": schema_registry}).register_schema(
        SUBJECT, Schema(json.dumps(newer), "AVRO")
    )
    registry = RemoteSchemaRegistry(RegistryHttp(schema_registry))
    codec = EventCodec(READING, registry)
    assert newer_id != codec.schema_id
    writer = EventCodec(READING)  # built-in v1 layout, re-framed with the newer id below
    at = datetime(2012, 3, 1, tzinfo=UTC)
    body = writer.encode(
        {
            "sensor_id": "773869",
            "event_time": at,
            "speed_mph": 61.0,
            "source": "t",
            "is_synthetic": False,
        }
    )[5:]
    message = b"\x00" + newer_id.to_bytes(4, "big") + body + b"\x02\x0e"  # lane = 7

    before = requests_served(schema_registry)
    decoded = [codec.decode(message) for _ in range(100)]
    assert requests_served(schema_registry) == before + 2  # which subject, then the schema
    assert decoded[0]["sensor_id"] == "773869" and decoded[0]["speed_mph"] == 61.0
    assert "lane" not in decoded[0]  # resolved into this code's version


def test_a_fresh_registry_gives_the_built_in_ids_and_keeps_them_across_a_restart(
    tmp_path: Path,
) -> None:
    """Offline codecs (no registry configured) write the ids the stack's registry assigns."""
    service = registry_service(tmp_path / "registry", port=18082 + PORT_SHIFT)
    service.start()
    try:
        ids = register_event_schemas(service.url)
        expected = {
            registry_subject(topic): [i for i, (n, _) in sorted(SCHEMA_IDS.items()) if n == name]
            for topic, name in TOPIC_SCHEMAS.items()
        }
        assert ids == expected
        service.stop()
        service.start()
        assert register_event_schemas(service.url) == expected
        assert RemoteSchemaRegistry(RegistryHttp(service.url)).latest(READING).schema_id == (
            BUILT_IN_READING_ID
        )
    finally:
        service.stop()
