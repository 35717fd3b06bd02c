"""Kafka -> lake through the real broker: exactly once across sensor ticks, reruns that rewrite
identical files, and every kind of bad input in the dead-letter topic with its reason."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pandas as pd
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from dagster import (
    DagsterInstance,
    materialize,
)
from ingest_helpers import file_digests, lake_frame, run_sensor_tick, sensor_context
from kafka_helpers import ONE_AND_THREE_BROKERS, fresh_topics, read_all, topic_message_count

from infra.stack.kafka import KafkaBroker
from resources import KafkaResource, LakeResource
from resources.network import NetworkResource
from sensors.kafka_offsets import kafka_offsets_sensor
from traffic_assets.ingestion.assets import raw_traffic_events
from traffic_assets.reference.sensor_graph import sensor_graph
from traffic_core.datasets import load_speed_csv
from traffic_core.events import EventCodec
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds
from traffic_core.ingestion.ranges import (
    IngestError,
    RangeOutcome,
    coordinator_not_ready,
    ingest_ranges,
)
from traffic_core.lake import OffsetRange, read_raw_day
from traffic_core.lake_storage import LakePath, lake_url
from traffic_core.settings import REPO_ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def six_days(shared_data: Path) -> pd.DataFrame:
    return load_speed_csv(shared_data / "metr-la" / "los_loop_speed_2012-03-01_to_03-06.csv")


def test_every_event_lands_exactly_once_across_two_ticks(
    kafka_broker: KafkaBroker, six_days: pd.DataFrame, local_or_hdfs_lake: LakePath
) -> None:
    events, dlq = fresh_topics(kafka_broker)
    kafka = KafkaResource(
        bootstrap_servers=kafka_broker.bootstrap_servers, events_topic=events, dlq_topic=dlq
    )
    lake = LakeResource(root=lake_url(local_or_hdfs_lake))
    sink = ReadingProducer(kafka_broker.bootstrap_servers, topic=events, dlq_topic=dlq)
    halfway = six_days.index[len(six_days) // 2]

    with DagsterInstance.ephemeral() as instance:
        first = replay_speeds(
            six_days.loc[six_days.index < halfway], sink, source="metr-la", is_synthetic=False
        )
        cursor = run_sensor_tick(instance, kafka, lake, None)
        assert len(lake_frame(local_or_hdfs_lake)) == first.events
        second = replay_speeds(
            six_days, sink, source="metr-la", is_synthetic=False, start_from=halfway
        )
        cursor = run_sensor_tick(instance, kafka, lake, cursor)
        quiet = kafka_offsets_sensor.evaluate_tick(sensor_context(instance, kafka, lake, cursor))
        assert not quiet.run_requests and quiet.skip_message

    stored = lake_frame(local_or_hdfs_lake)
    produced = first.events + second.events
    assert produced == six_days.size == 1728 * 207
    assert len(stored) == produced
    keys = set(zip(stored["sensor_id"], stored["event_time"], strict=True))
    assert len(keys) == produced
    expected = {
        (sensor, time.tz_localize("UTC")) for time in six_days.index for sensor in six_days.columns
    }
    assert keys == expected
    # Values survive the trip unchanged (float32 source, float64 on the wire).
    sample = stored[stored["sensor_id"] == "773869"].sort_values("event_time")
    assert sample["speed_mph"].to_numpy() == pytest.approx(six_days["773869"].to_numpy(dtype=float))
    assert topic_message_count(kafka_broker, dlq) == 0


def test_failed_run_rerun_produces_identical_files(
    kafka_broker: KafkaBroker, six_days: pd.DataFrame, local_or_hdfs_lake: LakePath
) -> None:
    events, dlq = fresh_topics(kafka_broker, partitions=3)
    sink = ReadingProducer(kafka_broker.bootstrap_servers, topic=events, dlq_topic=dlq)
    replay_speeds(six_days.iloc[:600], sink, source="metr-la", is_synthetic=False)
    consumer = Consumer(
        {"bootstrap.servers": kafka_broker.bootstrap_servers, "group.id": "rerun-test"}
    )
    counts = {p: consumer.get_watermark_offsets(TopicPartition(events, p)) for p in range(3)}
    ranges = [OffsetRange(events, p, 0, high - 1) for p, (_, high) in counts.items()]
    dlq_producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})

    def crash_after_first(outcome: RangeOutcome) -> None:
        raise IngestError(f"simulated crash after {outcome.offsets}")

    failed_lake = local_or_hdfs_lake / "failed-then-rerun"
    with pytest.raises(IngestError, match="simulated crash"):
        ingest_ranges(consumer, dlq_producer, failed_lake, ranges, after_range=crash_after_first)
    partial = file_digests(failed_lake)
    assert partial, "the first range was written before the crash"
    ingest_ranges(consumer, dlq_producer, failed_lake, ranges)

    clean_lake = local_or_hdfs_lake / "clean"
    ingest_ranges(consumer, dlq_producer, clean_lake, ranges)
    consumer.close()

    rerun = file_digests(failed_lake)
    assert rerun == file_digests(clean_lake)
    assert all(rerun[name] == digest for name, digest in partial.items())
    assert len(lake_frame(failed_lake)) == 600 * 207


def reading(sensor: str, minute: int, speed: object = 60.0) -> dict[str, object]:
    return {
        "sensor_id": sensor,
        "event_time": datetime(2012, 3, 1, 8, minute, tzinfo=UTC),
        "speed_mph": speed,
        "source": "test",
        "is_synthetic": False,
    }


def test_bad_input_corpus_goes_to_dlq_with_reasons(
    kafka_broker: KafkaBroker, tmp_path: Path, shared_data: Path
) -> None:
    events, dlq = fresh_topics(kafka_broker, partitions=1)
    kafka = KafkaResource(
        bootstrap_servers=kafka_broker.bootstrap_servers, events_topic=events, dlq_topic=dlq
    )
    lake = LakeResource(root=str(tmp_path / "lake"))
    codec = EventCodec()
    good = [codec.encode(reading("773869", m * 5)) for m in range(6)]
    json_good = orjson.dumps(
        {
            "sensor_id": "767541",
            "event_time": "2012-03-01T08:30:00Z",
            "speed_mph": None,
            "source": "api",
            "is_synthetic": False,
        }
    )
    bad = {
        "UNDECODABLE": b"\x00\x00\x00\x00\x01\xff\xff\xff",
        "MISSING_FIELD": orjson.dumps({"sensor_id": "773869", "speed_mph": 50.0}),
        "WRONG_TYPE": orjson.dumps(
            {
                "sensor_id": "773869",
                "event_time": "2012-03-01T08:40:00Z",
                "speed_mph": "fast",
                "source": "x",
                "is_synthetic": False,
            }
        ),
        "NAN_SPEED": codec.encode(reading("773869", 41, float("nan"))),
        "NEGATIVE_SPEED": codec.encode(reading("773869", 42, -3.0)),
        "SPEED_TOO_HIGH": codec.encode(reading("773869", 43, 150.0)),
        "UNKNOWN_SENSOR": codec.encode(reading("no-such-sensor", 44)),
        "FUTURE_TIMESTAMP": codec.encode(
            {**reading("773869", 45), "event_time": datetime(2099, 1, 1, tzinfo=UTC)}
        ),
        "DUPLICATE_READING": good[0],
        "OVERSIZED_MESSAGE": b"{" + b" " * 70_000 + b"}",
        "UNKNOWN_SCHEMA_ID": b"\x00\x00\x00\x03\xe7" + good[1][5:],
    }
    producer = Producer(
        {"bootstrap.servers": kafka_broker.bootstrap_servers, "message.max.bytes": 200_000}
    )
    ordered = [good[0], good[1], *bad.values(), good[2], json_good, *good[3:]]
    for value in ordered:
        producer.produce(events, value, key=b"k")
    assert producer.flush(30) == 0

    with DagsterInstance.ephemeral() as instance:
        assert materialize(
            [sensor_graph],
            resources={"lake": lake, "network": NetworkResource()},
            instance=instance,
        ).success
        run_sensor_tick(instance, kafka, lake, None)
        event = instance.get_latest_materialization_event(raw_traffic_events.key)
        assert event is not None
        metadata = event.asset_materialization.metadata

    dead = read_all(kafka_broker, dlq, expected=len(bad))
    reasons = {dict(m.headers())["dlq.reason"].decode(): m.value() for m in dead}
    assert set(reasons) == set(bad)
    for reason, value in bad.items():
        assert reasons[reason] == value, f"{reason}: the raw bytes must reach the DLQ untouched"
    offsets = sorted(int(dict(m.headers())["dlq.source.offset"]) for m in dead)
    assert offsets == list(range(2, 2 + len(bad)))

    stored = read_raw_day(tmp_path / "lake", datetime(2012, 3, 1).date())
    assert len(stored) == 7
    assert sorted(stored["event_time"].dt.minute.tolist()) == [0, 5, 10, 15, 20, 25, 30]
    assert stored.loc[stored["sensor_id"] == "767541", "speed_mph"].isna().all()
    assert metadata["rejected"].value == len(bad)
    assert json.loads(json.dumps(metadata["rejected_by_reason"].value)) == {r: 1 for r in bad}


@pytest.mark.slow
@ONE_AND_THREE_BROKERS
def test_broker_killed_mid_replay_loses_and_duplicates_nothing(
    kafka_service: KafkaBroker, shared_data: Path, six_days: pd.DataFrame, tmp_path: Path
) -> None:
    """The broker leading most partitions dies mid-replay (with one broker: the only one)."""
    events, dlq = fresh_topics(kafka_service, partitions=4)
    csv = shared_data / "metr-la" / "los_loop_speed_2012-03-01_to_03-06.csv"
    steps = 600  # ~124k readings, ~15 s at this speed-up
    producer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "traffic_core.ingestion.producer",
            "--data",
            str(csv),
            "--bootstrap-servers",
            kafka_service.bootstrap_servers,
            "--topic",
            events,
            "--speedup",
            "12000",
            "--until",
            str(six_days.index[steps - 1]),
            "--no-progress",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(4)
        assert producer.poll() is None, "the replay must still be running when the broker dies"
        assert kafka_service.kill(kafka_service.leader_of_most(events))
        time.sleep(2)
        kafka_service.start()
        output, _ = producer.communicate(timeout=600)
    finally:
        if producer.poll() is None:
            producer.kill()
    assert producer.returncode == 0, output
    assert "delivery_failures=0" in output, output

    expected = steps * six_days.shape[1]
    assert topic_message_count(kafka_service, events) == expected

    consumer = Consumer({"bootstrap.servers": kafka_service.bootstrap_servers, "group.id": "k"})
    ranges = []
    for partition in range(4):
        low, high = consumer.get_watermark_offsets(TopicPartition(events, partition), timeout=10)
        ranges.append(OffsetRange(events, partition, low, high - 1))
    report = ingest_ranges(
        consumer,
        Producer({"bootstrap.servers": kafka_service.bootstrap_servers}),
        tmp_path / "lake",
        ranges,
        dlq_topic=dlq,
    )
    consumer.close()
    stored = lake_frame(tmp_path / "lake")
    assert report.accepted == len(stored) == expected
    assert not stored.duplicated(["sensor_id", "event_time"]).any()


@pytest.mark.parametrize(
    ("code", "waited_out"),
    [
        (KafkaError._WAIT_COORD, True),  # a fresh broker still creating __consumer_offsets
        (KafkaError.COORDINATOR_LOAD_IN_PROGRESS, True),
        (KafkaError.NOT_COORDINATOR, True),  # the coordinator moved: librdkafka finds it again
        (KafkaError.UNKNOWN_TOPIC_OR_PART, False),
        (KafkaError.GROUP_AUTHORIZATION_FAILED, False),
    ],
)
def test_commits_wait_only_for_a_coordinator_not_ready(code: int, waited_out: bool) -> None:
    assert coordinator_not_ready(KafkaException(KafkaError(code))) is waited_out
    assert not coordinator_not_ready(ValueError("not Kafka's"))
