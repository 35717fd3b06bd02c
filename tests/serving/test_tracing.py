"""Tracing a forecast back to its data: a replay's ingest id travels inside every reading (no
Kafka header) into the lake rows, the raw asset's materialization metadata and the API's
forecast `source`, which names the Kafka position of the newest reading used."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from api_fixtures import LIVE_FROM, ApiServer, api_env, real_speeds
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from dagster import DagsterInstance, materialize
from kafka_helpers import fresh_topics

from infra.stack.kafka import KafkaBroker
from resources import KafkaResource, LakeResource
from resources.network import NetworkResource
from traffic_assets.ingestion.assets import raw_traffic_events
from traffic_core.events import EventCodec
from traffic_core.ingestion.ingest_ids import new_ingest_id
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds
from traffic_core.kafka.topics import TopicSpec, ensure_topics
from traffic_core.lake import (
    RAW_SCHEMA,
    OffsetRange,
    ingest_id_counts,
    raw_file_path,
    raw_files,
    read_raw_day,
    write_raw_range,
)

DAY = date(2012, 3, 6)
SENSOR = "773869"
LAST = LIVE_FROM + pd.Timedelta("115min")


def test_raw_files_without_the_column_read_as_null_ingest_ids(tmp_path: Path) -> None:
    rows = pd.DataFrame(
        {
            "sensor_id": ["a", "b"],
            "event_time": pd.to_datetime(["2012-03-06 00:00", "2012-03-06 00:05"], utc=True),
            "speed_mph": [50.0, None],
            "volume": pd.array([None, None], dtype="Int32"),
            "occupancy": [None, None],
            "source": "metr-la",
            "is_synthetic": False,
            "kafka_topic": "events",
            "kafka_partition": 0,
            "kafka_offset": [0, 1],
        }
    )
    old = OffsetRange("events", 0, 0, 1)
    old_schema = pa.schema([f for f in RAW_SCHEMA if f.name != "ingest_id"])
    path = raw_file_path(tmp_path, DAY, old)
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(rows, old_schema, preserve_index=False), path)
    new = write_raw_range(
        tmp_path,
        OffsetRange("events", 0, 2, 3),
        rows.assign(kafka_offset=[2, 3], ingest_id=["ingest-x", None]),
    )
    assert write_raw_range(tmp_path, OffsetRange("events", 1, 0, 1), rows)  # no column given

    frame = read_raw_day(tmp_path, DAY)
    assert frame["ingest_id"].fillna("-").tolist() == ["-", "-", "ingest-x", "-", "-", "-"]
    assert ingest_id_counts(raw_files(tmp_path, DAY)) == {None: 5, "ingest-x": 1}
    assert pq.read_schema(new[DAY]).field("ingest_id").type == pa.string()


def end_ranges(broker: KafkaBroker, topic: str) -> list[dict]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "trace"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        marks = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in partitions
        }
    finally:
        consumer.close()
    return [
        {"topic": topic, "partition": p, "first": low, "last": high - 1}
        for p, (low, high) in sorted(marks.items())
        if high > low
    ]


def message_at(broker: KafkaBroker, topic: str, partition: int, offset: int) -> dict:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "trace"})
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        message = consumer.consume(1, timeout=10)[0]
    finally:
        consumer.close()
    assert message.offset() == offset
    return EventCodec().decode(message.value())


@pytest.mark.integration
@pytest.mark.slow
def test_a_forecast_traces_back_to_lake_rows_dagster_metadata_and_the_replay(
    kafka_broker: KafkaBroker, model_registry: Path, shared_data: Path, tmp_path: Path
) -> None:
    events, dlq = fresh_topics(kafka_broker)
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    ensure_topics(admin, [TopicSpec(f"{events}-{kind}", 2) for kind in ("predictions", "alerts")])
    speeds = real_speeds(shared_data).loc[LIVE_FROM:LAST]
    first, second = new_ingest_id(), "ingest-trace-second"
    sink = ReadingProducer(kafka_broker.bootstrap_servers, topic=events, dlq_topic=dlq)
    for part, ingest_id in ((speeds.iloc[:-1], first), (speeds.iloc[-1:], second)):
        summary = replay_speeds(
            part, sink, source="metr-la", is_synthetic=False, ingest_id=ingest_id
        )
        assert summary.ingest_id == ingest_id and summary.delivery_failures == 0

    # Lake and Dagster: the run's metadata counts each replay's readings, per range too.
    lake = tmp_path / "lake"
    kafka = KafkaResource(
        bootstrap_servers=kafka_broker.bootstrap_servers, events_topic=events, dlq_topic=dlq
    )
    config = {"ranges": end_ranges(kafka_broker, events), "check_sensor_catalogue": False}
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [raw_traffic_events],
            partition_key=DAY.isoformat(),
            run_config={"ops": {"raw_traffic_events": {"config": config}}},
            resources={
                "kafka": kafka,
                "lake": LakeResource(root=str(lake)),
                "network": NetworkResource(),
            },
            instance=instance,
        )
        assert result.success
        (materialization,) = result.asset_materializations_for_node("raw_traffic_events")
        logs = [e.message for e in instance.all_logs(result.run_id) if "ingest id" in e.message]
    metadata = materialization.metadata
    counts = [{"ingest_id": first, "readings": 23 * 207}, {"ingest_id": second, "readings": 207}]
    assert metadata["ingest_ids"].value == counts
    ranges = metadata["offset_ranges"].value
    assert {i for r in ranges for i in r["ingest_ids"]} == {first, second}
    assert len(logs) == len(ranges) and all(second in line for line in logs)
    stored = read_raw_day(lake, DAY)
    assert stored.groupby("ingest_id").size().to_dict() == {first: 23 * 207, second: 207}

    # API: the forecast names the newest reading it used; that reading is in Kafka and the lake.
    server = ApiServer(api_env(model_registry, kafka_broker, events), events, dlq)
    server.start(tmp_path)
    try:
        answer = httpx.get(
            f"{server.url}/v1/forecasts/{SENSOR}", headers=server.headers(), timeout=10
        )
        assert answer.status_code == 200, answer.text
        source = answer.json()["source"]
        assert source["ingest_id"] == second and source["kafka_topic"] == events
        assert pd.Timestamp(source["reading_time"]) == LAST.tz_localize("UTC")
        version = answer.json()["model_version"]
        lineage = httpx.get(
            f"{server.url}/v1/models/{version}/lineage",
            headers=server.headers("auditor"),
            timeout=10,
        ).json()
        assert lineage["ingest_ids"] == []  # the seed model was trained from the CSV
    finally:
        server.stop()
    partition, offset = source["kafka_partition"], source["kafka_offset"]
    reading = message_at(kafka_broker, events, partition, offset)
    assert (reading["sensor_id"], reading["ingest_id"]) == (SENSOR, second)
    row = stored[(stored["kafka_partition"] == partition) & (stored["kafka_offset"] == offset)]
    assert row[["sensor_id", "ingest_id"]].values.tolist() == [[SENSOR, second]]
    assert row["event_time"].tolist() == [LAST.tz_localize("UTC")]
    (lake_file,) = [
        p
        for p in raw_files(lake, DAY)
        if f"partition={partition:03d}" in str(p)
        and (m := re.search(r"offsets=(\d+)-(\d+)", p.name))
        and int(m[1]) <= offset <= int(m[2])
    ]
    assert lake_file.exists()
    # The window-close log line lists the ingest ids each window held.
    closed = [line for line in server.log.read_text().splitlines() if "windows closed" in line]
    assert any(second in line for line in closed) and any(first in line for line in closed)
