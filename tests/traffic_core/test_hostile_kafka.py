"""Hostile input on the real broker, through both lake writers (the Dagster asset and a group
worker): whatever the broker accepts, compressed or not and up to its own size limit, ends
exactly once in the lake or in the DLQ, every valid reading is stored, and no writer stops.
A reject too large for the DLQ arrives there as a reference record naming the original."""

from __future__ import annotations

import base64
import hashlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from dagster import DagsterInstance
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from ingest_helpers import dlq_sources, lake_offsets, run_sensor_tick
from kafka_helpers import fresh_topics, read_all

from infra.stack.kafka import KafkaBroker
from resources import KafkaResource, LakeResource
from traffic_assets.ingestion.assets import raw_traffic_events
from traffic_assets.partitions import daily_partitions
from traffic_core.datasets import default_data_dir
from traffic_core.events import EventCodec, Reason, Rejection
from traffic_core.ingestion.config import sensor_catalogue, validation_config
from traffic_core.ingestion.group_worker import GroupIngestWorker, WorkerSettings
from traffic_core.ingestion.ranges import send_rejects

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CODEC = EventCodec()
SENSORS = sorted(sensor_catalogue(Path("/nonexistent-lake"), "metr-la", default_data_dir()))
"""The dataset's own graph: no lake table is needed."""
DAY0 = datetime(2012, 3, 1, tzinfo=UTC)
SLOTS = 2 * 288  # two days of 5-minute readings: two asset runs, stays within the lateness


def broker_max_message_bytes(broker: KafkaBroker) -> int:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    resource = ConfigResource(ConfigResource.Type.BROKER, "1")
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    return int(configs["message.max.bytes"].value)


def compressing_producer(broker: KafkaBroker) -> Producer:
    """lz4, and a client limit far above the broker's: the broker's batch limit decides."""
    return Producer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "compression.type": "lz4",
            "message.max.bytes": 20_000_000,
            "linger.ms": 5,
        }
    )


@dataclass
class Sent:
    """What was produced: value by (partition, offset), and which of them are valid."""

    values: dict[tuple[int, int], bytes] = field(default_factory=dict)
    valid: set[tuple[int, int]] = field(default_factory=set)


def produce(broker: KafkaBroker, topic: str, stream: list[tuple[bytes, bool, int | None]]) -> Sent:
    """(value, is_valid, Kafka timestamp ms or None for now) in order; all must be accepted."""
    sent, failures = Sent(), []
    producer = compressing_producer(broker)
    for i, (value, valid, stamp) in enumerate(stream):

        def on_delivery(error, message, value=value, valid=valid) -> None:
            if error is not None:
                failures.append(error)
                return
            where = (message.partition(), message.offset())
            sent.values[where] = value
            if valid:
                sent.valid.add(where)

        producer.produce(
            topic, value, key=b"k%d" % i, timestamp=stamp or 0, on_delivery=on_delivery
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not failures, f"the broker refused {len(failures)} messages: {failures[0]}"
    return sent


# -- the two writers -------------------------------------------------------------------------


def run_asset(broker: KafkaBroker, events: str, dlq: str, lake: Path) -> DagsterInstance:
    """Sensor ticks and their runs until the sensor has nothing new (every run must succeed)."""
    kafka = KafkaResource(
        bootstrap_servers=broker.bootstrap_servers, events_topic=events, dlq_topic=dlq
    )
    instance = DagsterInstance.ephemeral()
    cursor = run_sensor_tick(instance, kafka, LakeResource(root=str(lake)), None)
    run_sensor_tick(instance, kafka, LakeResource(root=str(lake)), cursor)
    return instance


def run_group_worker(broker: KafkaBroker, events: str, dlq: str, lake: Path) -> GroupIngestWorker:
    """One worker until the group's committed offsets reach every partition's end."""
    worker = GroupIngestWorker(
        WorkerSettings(
            bootstrap_servers=broker.bootstrap_servers,
            lake_root=lake,
            topic=events,
            dlq_topic=dlq,
            group_id=f"hostile-{uuid.uuid4().hex[:6]}",
            worker_id="w",
            flush_messages=150,
            flush_seconds=0.5,
            session_timeout_ms=6000,
        ),
        validation_config(frozenset(SENSORS)),
    )
    worker.subscribe()
    ends = end_offsets(broker, events)
    deadline = time.monotonic() + 120
    try:
        while committed_offsets(worker, events, len(ends)) != ends:
            assert time.monotonic() < deadline, "the worker did not commit past every message"
            worker.poll(0.2)
    finally:
        worker.close()
    return worker


def end_offsets(broker: KafkaBroker, topic: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "ends"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in sorted(partitions)
        ]
    finally:
        consumer.close()


def committed_offsets(worker: GroupIngestWorker, topic: str, partitions: int) -> list[int]:
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    return [max(tp.offset, 0) for tp in worker.consumer.committed(tps, timeout=10)]


Writer = Callable[[KafkaBroker, str, str, Path], object]
WRITERS = {"asset": run_asset, "group": run_group_worker}


# -- checks -----------------------------------------------------------------------------------


def check_exactly_once(broker: KafkaBroker, dlq: str, lake: Path, sent: Sent) -> list[Message]:
    """Every produced message once in the lake or once in the DLQ; every valid one stored;
    each DLQ record the original bytes or a bounded reference to them."""
    stored = lake_offsets(lake)
    assert len(stored) == len(set(stored)), "an offset is stored twice"
    expected_dead = len(sent.values) - len(stored)
    dead = read_all(broker, dlq, expected=expected_dead, timeout_loops=60)
    sources = dlq_sources(dead)
    assert len(sources) == len(set(sources)), "a reject reached the DLQ twice"
    assert set(stored) | set(sources) == set(sent.values)
    assert not set(stored) & set(sources), "a message is both stored and rejected"
    assert sent.valid <= set(stored), "a valid reading was not stored"
    for message, where in zip(dead, sources, strict=True):
        headers = dict(message.headers())
        original = sent.values[where]
        if headers.get("dlq.payload") == b"reference":
            check_reference(message.value(), original, where)
        else:
            assert message.value() == original, "the raw bytes must reach the DLQ untouched"
        assert len(message.value() or b"") <= 512 * 1024
    return dead


def check_reference(value: bytes, original: bytes, where: tuple[int, int]) -> None:
    reference = orjson.loads(value)
    assert (reference["partition"], reference["offset"]) == where
    assert reference["size"] == len(original)
    assert reference["sha256"] == hashlib.sha256(original).hexdigest()
    assert original.startswith(base64.b64decode(reference["prefix_base64"]))
    assert reference["reason"] and len(value) < 4096


def check_writer_kept_going(name: str, outcome: object, sent: Sent) -> None:
    """The asset's runs all succeeded (run_sensor_tick asserts it) and materialized only
    partitions that exist; the worker committed past every message (run_group_worker). Both
    counted the stored readings whose JSON had fields the schema lacks."""
    with_extra = sum(b'"lane_count"' in sent.values[w] for w in sent.valid)
    if name == "asset":
        assert isinstance(outcome, DagsterInstance)
        records = outcome.fetch_materializations(raw_traffic_events.key, limit=1000).records
        partitions = {r.partition_key for r in records}
        assert partitions <= set(daily_partitions.get_partition_keys()), partitions
        metadata = [r.asset_materialization.metadata for r in records]
        counted = sum(
            m["with_unknown_fields"].value for m in metadata if "with_unknown_fields" in m
        )
        outcome.dispose()
    else:
        assert isinstance(outcome, GroupIngestWorker)
        counted = (
            outcome.metrics.registry.get_sample_value(
                "traffic_ingest_unknown_fields_total", {"topic": outcome.settings.topic}
            )
            or 0
        )
    assert counted == with_extra


# -- the 1.2 MB compressed reading ------------------------------------------------------------


def reading(sensor: str, at: datetime, **extra: object) -> dict[str, object]:
    return {
        "sensor_id": sensor,
        "event_time": at,
        "speed_mph": 61.5,
        "source": "test",
        "is_synthetic": False,
        **extra,
    }


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_compressed_reading_over_a_megabyte_reaches_the_dlq_as_a_reference(
    kafka_broker: KafkaBroker, tmp_path: Path, writer: str
) -> None:
    """A reading of ~1.2 MB, lz4-compressed so the broker takes it: too large for the DLQ, it
    goes there as a reference record, and the readings around it are stored and committed."""
    events, dlq = fresh_topics(kafka_broker, partitions=1)
    huge = CODEC.encode(reading(SENSORS[0], DAY0, correlation_id="x" * 1_200_000))
    assert len(huge) > broker_max_message_bytes(kafka_broker)
    stamps = [DAY0 + timedelta(minutes=5 * i) for i in range(4)]
    stream = [
        (CODEC.encode(reading(SENSORS[1], stamps[0])), True, _ms(stamps[0])),
        (huge, False, _ms(stamps[1])),
        (CODEC.encode(reading(SENSORS[1], stamps[2])), True, _ms(stamps[2])),
        (CODEC.encode(reading(SENSORS[1], stamps[3])), True, _ms(stamps[3])),
    ]
    sent = produce(kafka_broker, events, stream)
    lake = tmp_path / "lake"
    outcome = WRITERS[writer](kafka_broker, events, dlq, lake)
    (dead,) = check_exactly_once(kafka_broker, dlq, lake, sent)
    headers = {k: v.decode() for k, v in dead.headers()}
    assert headers["dlq.reason"] == "OVERSIZED_MESSAGE"
    assert headers["dlq.payload"] == "reference"
    assert headers["dlq.original.size"] == str(len(huge))
    assert sorted(o for _, o in lake_offsets(lake)) == [0, 2, 3]
    check_writer_kept_going(writer, outcome, sent)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


# -- generated streams ------------------------------------------------------------------------

BAD_TIMES = [
    datetime(1900, 1, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, tzinfo=UTC),
    datetime(2012, 2, 29, 23, 55, tzinfo=UTC),
    datetime(2099, 1, 1, tzinfo=UTC),
]
BAD_FIELDS: dict[str, st.SearchStrategy] = {
    "sensor_id": st.one_of(
        st.just("../../etc/passwd"),
        st.just(""),
        st.text(max_size=30).filter(lambda s: s not in SENSORS),
    ),
    "event_time": st.sampled_from(BAD_TIMES),
    "speed_mph": st.one_of(
        st.floats(max_value=-0.001, allow_nan=False, allow_infinity=False),
        st.floats(min_value=120.001, allow_nan=False, allow_infinity=False),
    ),
    "volume": st.integers(-(2**31), -1),
    "occupancy": st.one_of(
        st.floats(min_value=1.001, allow_nan=False, allow_infinity=False),
        st.floats(max_value=-0.001, allow_nan=False, allow_infinity=False),
    ),
}
"""Values each field of a reading must not have (JSON-safe: no NaN or infinities)."""
SCHEMA_FIELDS = {f["name"] for f in CODEC.schema["fields"]}


@st.composite
def wrong_reading(draw: st.DrawFn) -> bytes:
    """Schema-shaped (Avro, or JSON with extra fields) with at least one wrong value."""
    at = DAY0 + timedelta(minutes=5 * draw(st.integers(0, SLOTS - 1)))
    record = reading(draw(st.sampled_from(SENSORS)), at)
    for name in draw(st.lists(st.sampled_from(sorted(BAD_FIELDS)), min_size=1, unique=True)):
        record[name] = draw(BAD_FIELDS[name])
    if draw(st.booleans()):
        if draw(st.booleans()):
            record["speed_mph"] = float("nan")  # Avro carries NaN; JSON would make it null
        return CODEC.encode(record)
    record["event_time"] = record["event_time"].isoformat()
    extra = draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in SCHEMA_FIELDS))
    record[extra] = draw(st.integers(-(2**31), 2**31))
    return orjson.dumps(record)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=12,
)
HOSTILE = st.one_of(
    st.binary(max_size=400),
    st.binary(max_size=40).map(lambda b: b"\x00\x00\x00\x00\x01" + b),  # reading v1 header
    JSON_VALUES.map(orjson.dumps),
    wrong_reading(),
)


@st.composite
def valid_readings(draw: st.DrawFn, size: int) -> list[bytes]:
    """Distinct (sensor, time) readings within two days, Avro or JSON (some with extra
    fields, accepted and counted), missing speeds included."""
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(SENSORS), st.integers(0, SLOTS - 1)),
            min_size=size,
            max_size=size,
            unique=True,
        )
    )
    out = []
    for sensor, slot in keys:
        speed = draw(st.one_of(st.none(), st.floats(0, 120)))
        record = reading(sensor, DAY0 + timedelta(minutes=5 * slot), speed_mph=speed)
        kind = draw(st.sampled_from(["avro", "avro", "json", "json+extra"]))
        if kind == "avro":
            out.append(CODEC.encode(record))
            continue
        record["event_time"] = record["event_time"].isoformat()
        if kind == "json+extra":
            record["lane_count"] = draw(st.integers(1, 6))
        out.append(orjson.dumps(record))
    return out


def large_messages(seed: int, broker_max: int) -> list[bytes]:
    """A few near the broker's limit: incompressible ones just under it, compressible ones
    far over it (lz4 brings them under), one DLQ-sized."""
    rng = random.Random(seed)
    return [
        rng.randbytes(broker_max - 64 * 1024),
        rng.randbytes(300_000),
        CODEC.encode(reading(SENSORS[2], DAY0, correlation_id="y" * 3_000_000)),
        orjson.dumps({"padding": "z" * (2 * broker_max)}),
    ]


def stream_strategy(valid: int, hostile: int) -> st.SearchStrategy:
    return st.tuples(
        valid_readings(valid),
        st.lists(HOSTILE, min_size=hostile, max_size=hostile),
        st.randoms(use_true_random=False),
    )


def mixed_stream(drawn: tuple, broker_max: int) -> list[tuple[bytes, bool, int | None]]:
    """Valid readings stamped with their event time (as the producer does), the rest with the
    current time (a hostile producer's choice), in a drawn order."""
    valid, hostile, rng = drawn
    stream = [(v, True, _ms(_event_time(v))) for v in valid]
    stream += [
        (h, False, None) for h in [*hostile, *large_messages(rng.randrange(2**32), broker_max)]
    ]
    rng.shuffle(stream)
    return stream


def _event_time(value: bytes) -> datetime:
    return CODEC.decode_any(value)["event_time"]


@pytest.mark.parametrize("writer", sorted(WRITERS))
@settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=4,
    phases=[Phase.explicit, Phase.generate],  # a broker round-trip per example: no shrinking
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(drawn=stream_strategy(valid=400, hostile=400))
def test_generated_hostile_streams_end_exactly_once_in_lake_or_dlq(
    kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory, writer: str, drawn: tuple
) -> None:
    stream = mixed_stream(drawn, broker_max_message_bytes(kafka_broker))
    events, dlq = fresh_topics(kafka_broker, partitions=3)
    sent = produce(kafka_broker, events, stream)
    lake = tmp_path_factory.mktemp("lake")
    outcome = WRITERS[writer](kafka_broker, events, dlq, lake)
    check_exactly_once(kafka_broker, dlq, lake, sent)
    check_writer_kept_going(writer, outcome, sent)


def small_dlq(broker: KafkaBroker) -> str:
    """A DLQ topic taking records of 200 kB at most."""
    dlq = f"small-dlq-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    small = NewTopic(dlq, num_partitions=1, config={"max.message.bytes": "200000"})
    admin.create_topics([small])[dlq].result(timeout=30)
    return dlq


def test_a_reject_the_broker_refuses_as_too_large_is_resent_as_a_reference(
    kafka_broker: KafkaBroker,
) -> None:
    """Even with no size cap known, a refusal for size becomes a reference, not a failure."""
    dlq = small_dlq(kafka_broker)
    bulky = random.Random(2).randbytes(300_000)
    rejection = Rejection(Reason.OVERSIZED_MESSAGE, "big", bulky, b"k", "events", 0, 7)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    send_rejects(producer, dlq, [rejection], flush=True, max_record_bytes=10**9)
    (dead,) = read_all(kafka_broker, dlq, expected=1)
    assert dict(dead.headers())["dlq.payload"] == b"reference"
    check_reference(dead.value(), bulky, (0, 7))


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_dlq_topic_with_a_smaller_limit_gets_references_not_refusals(
    kafka_broker: KafkaBroker, tmp_path: Path, writer: str
) -> None:
    """The DLQ's own max.message.bytes caps what is copied whole: a 300 kB reject, under the
    default copy limit, goes as a reference to a DLQ that takes 200 kB records at most
    (instead of a refusal that would fail the run or abort the worker's transaction forever)."""
    events, _ = fresh_topics(kafka_broker, partitions=1)
    dlq = small_dlq(kafka_broker)
    at = DAY0 + timedelta(minutes=5)
    bulky = random.Random(1).randbytes(300_000)
    stream = [
        (bulky, False, _ms(DAY0)),
        (CODEC.encode(reading(SENSORS[1], at)), True, _ms(at)),
    ]
    sent = produce(kafka_broker, events, stream)
    lake = tmp_path / "lake"
    WRITERS[writer](kafka_broker, events, dlq, lake)
    (dead,) = check_exactly_once(kafka_broker, dlq, lake, sent)
    assert dict(dead.headers())["dlq.payload"] == b"reference"
