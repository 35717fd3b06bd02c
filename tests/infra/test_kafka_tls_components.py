"""The platform's own components under TRAFFIC_SECURITY=tls, against the TLS broker: the
producer, the Dagster Kafka resource's ingestion, a group worker, the stream processor and the
API's publisher each connect as their principal through the one client configuration, with
nothing configured of their own."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from ingest_helpers import lake_frame
from kafka_helpers import _watermarks
from stream_helpers import StreamTopics, eventually, start_processor, stop

from infra.stack.__main__ import create_topics
from infra.stack.kafka import KafkaBroker
from resources import KafkaResource
from serving.streams import KafkaPublisher
from traffic_core.ingestion.group_worker import GroupIngestWorker, WorkerSettings
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds
from traffic_core.ingestion.ranges import ingest_ranges
from traffic_core.kafka.topics import (
    TRAFFIC_AGGREGATES,
    TRAFFIC_ALERTS,
    TRAFFIC_EVENTS,
    TRAFFIC_EVENTS_DLQ,
    TRAFFIC_PREDICTIONS,
)
from traffic_core.lake import OffsetRange

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SENSORS = ["tls-1", "tls-2", "tls-3"]


@pytest.fixture(scope="module")
def broker(kafka_tls_broker: KafkaBroker) -> KafkaBroker:
    create_topics(kafka_tls_broker)
    return kafka_tls_broker


@pytest.fixture(autouse=True)
def tls_settings(broker: KafkaBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    """The platform switch, as a deployment sets it: every component reads it on its own."""
    monkeypatch.setenv("TRAFFIC_SECURITY", "tls")
    monkeypatch.setenv("TRAFFIC_SECURITY_DIR", str(broker.security_dir))


def ends(broker: KafkaBroker) -> dict[int, int]:
    consumer = Consumer({**broker.client_config("traffic-broker"), "group.id": "tls-probe"})
    try:
        partitions = consumer.list_topics(TRAFFIC_EVENTS, timeout=10).topics[TRAFFIC_EVENTS]
        return {
            p: _watermarks(consumer, TopicPartition(TRAFFIC_EVENTS, p))[1]
            for p in partitions.partitions
        }
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def replayed(broker: KafkaBroker) -> tuple[list[OffsetRange], int]:
    """Six readings of three sensors, one of them impossible (the producer's own reject goes to
    the DLQ); the offset ranges they took in traffic-events, and how many are valid."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TRAFFIC_SECURITY", "tls")
        env.setenv("TRAFFIC_SECURITY_DIR", str(broker.security_dir))
        before = ends(broker)
        speeds = pd.DataFrame(
            np.full((6, 3), 55.0),
            index=pd.date_range("2012-03-01 08:00", periods=6, freq="5min"),
            columns=SENSORS,
        )
        speeds.iloc[2, 1] = 500.0
        summary = replay_speeds(
            speeds, ReadingProducer(broker.bootstrap_servers), source="t", is_synthetic=True
        )
        assert summary.delivery_failures == 0
        assert sum(summary.rejected.values()) == 1
        after = ends(broker)
    ranges = [
        OffsetRange(TRAFFIC_EVENTS, p, before[p], after[p] - 1)
        for p in after
        if after[p] > before[p]
    ]
    assert sum(r.last - r.first + 1 for r in ranges) == summary.events == 17
    return ranges, summary.events


def test_the_dagster_resource_ingests_as_the_lake_writer(
    broker: KafkaBroker, replayed: tuple[list[OffsetRange], int], tmp_path: Path
) -> None:
    ranges, valid = replayed
    kafka = KafkaResource(bootstrap_servers=broker.bootstrap_servers)
    consumer = kafka.consumer(group_id="traffic-lake-ingest")
    try:
        report = ingest_ranges(consumer, kafka.producer(), tmp_path, ranges)
    finally:
        consumer.close()
    assert report.accepted == valid
    assert sorted(lake_frame(tmp_path)["sensor_id"].unique()) == SENSORS


def test_a_group_worker_stores_and_commits_in_its_transaction(
    broker: KafkaBroker, replayed: tuple[list[OffsetRange], int], tmp_path: Path
) -> None:
    _, valid = replayed
    worker = GroupIngestWorker(
        WorkerSettings(
            bootstrap_servers=broker.bootstrap_servers,
            lake_root=tmp_path,
            worker_id="tls-test",
            flush_seconds=0.5,
            session_timeout_ms=6000,
        )
    )
    worker.subscribe()
    deadline = time.monotonic() + 90
    try:
        while not (tmp_path.exists() and _stored_of_ours(tmp_path) == valid):
            assert time.monotonic() < deadline, "the worker did not store the readings"
            worker.poll(0.2)
    finally:
        worker.close()


def _stored_of_ours(lake: Path) -> int:
    try:
        frame = lake_frame(lake)
    except ValueError:  # no file yet
        return 0
    return int(frame["sensor_id"].isin(SENSORS).sum())


def test_the_api_publishes_forecasts_and_alerts_as_itself(broker: KafkaBroker) -> None:
    publisher = KafkaPublisher(broker.bootstrap_servers, TRAFFIC_PREDICTIONS, TRAFFIC_ALERTS)
    publisher.send(TRAFFIC_PREDICTIONS, [("tls-1", b'{"speed_mph": 55}')])
    publisher.send(TRAFFIC_ALERTS, [("tls-1", b'{"level": "none"}')])
    publisher.close(30)
    assert publisher.errors == 0


def test_the_stream_processor_aggregates_as_itself(
    broker: KafkaBroker, replayed: tuple[list[OffsetRange], int], tmp_path: Path
) -> None:
    """Its consumer group, transactional id, state changelog (created by Quix) and outputs all
    under the stream principal's ACLs; the closed windows of the replayed sensors arrive."""
    group = f"traffic-stream-tls-{uuid.uuid4().hex[:6]}"
    topics = StreamTopics(TRAFFIC_EVENTS, TRAFFIC_AGGREGATES, TRAFFIC_EVENTS_DLQ, group)
    # The last --group-id wins: one of the processor principal's groups.
    process = start_processor(broker, topics, "tls", tmp_path, "--group-id", group)
    reader = Consumer(
        {
            **broker.client_config("traffic-broker"),
            "group.id": f"tls-read-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    reader.subscribe([TRAFFIC_AGGREGATES])

    def window_of_ours() -> bytes | None:
        assert process.poll() is None, (tmp_path / "tls.log").read_text()[-3000:]
        message = reader.poll(1.0)
        ok = message is not None and message.error() is None
        return message.key() if ok and message.key() in {s.encode() for s in SENSORS} else None

    try:
        assert eventually(window_of_ours, 240, "an aggregate of the replayed sensors", every=0)
    finally:
        reader.close()
        stop(process)
    admin = AdminClient(broker.client_config("traffic-broker"))
    changelogs = [t for t in admin.list_topics(timeout=10).topics if t.startswith("changelog__")]
    assert any(group in t for t in changelogs)
