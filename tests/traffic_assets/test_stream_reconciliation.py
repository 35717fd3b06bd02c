"""The stream-vs-batch check on the real broker: windows, late readings and their DLQ headers."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import Producer
from stream_helpers import aggregate_record, stream_topics

from infra.stack.kafka import KafkaBroker
from resources.kafka import KafkaResource
from resources.lake import LakeResource
from traffic_assets.streams.checks import check_day
from traffic_core.events import AGGREGATE, READING, EventCodec
from traffic_core.streams.processor import CONSUMER_HEADER

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY = date(2012, 3, 6)
START = pd.Timestamp(DAY, tz="UTC")


def test_the_check_explains_late_readings_and_names_other_differences(
    kafka_broker: KafkaBroker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topics = stream_topics(kafka_broker)
    monkeypatch.setenv("TRAFFIC_STREAM_GROUP_ID", topics.group)
    dlq, aggregates, group = topics.dlq, topics.aggregates, topics.group

    windows = [START + timedelta(minutes=5 * i) for i in range(4)]
    batch = pd.DataFrame(
        {
            "sensor_id": "773869",
            "window_start": windows,
            "reading_count": [1, 2, 1, 1],
            "speed_mean": [60.0, 55.0, 50.0, 45.0],
        }
    )
    lake = LakeResource(root=str(tmp_path / "lake"))
    path = lake.aggregates_file(DAY)
    path.parent.mkdir(parents=True)
    batch.to_parquet(path)

    codec, readings = EventCodec(AGGREGATE), EventCodec(READING)
    producer = Producer({"bootstrap.servers": bootstrap})
    # Window 1 lacks a reading the batch counted: late, and the DLQ says so for this group.
    # Window 2 differs with no late reading. Window 3 is still open in the stream.
    for start, count, mean in ((windows[0], 1, 60.0), (windows[1], 1, 50.0), (windows[2], 1, 51.0)):
        producer.produce(
            aggregates,
            codec.encode(aggregate_record("773869", start.to_pydatetime(), count, mean)),
            b"773869",
        )
    late = {
        "sensor_id": "773869",
        "event_time": windows[1].to_pydatetime(),
        "speed_mph": 60.0,
        "source": "synthetic",
    }
    headers = [("dlq.reason", b"LATE_READING"), (CONSUMER_HEADER, group.encode())]
    producer.produce(dlq, readings.encode(late), b"773869", headers=headers)
    other = [("dlq.reason", b"LATE_READING"), (CONSUMER_HEADER, b"someone-else")]
    producer.produce(
        dlq, readings.encode(late | {"event_time": windows[2].to_pydatetime()}), headers=other
    )
    assert producer.flush(10) == 0

    kafka = KafkaResource(bootstrap_servers=bootstrap, dlq_topic=dlq, aggregates_topic=aggregates)
    result = check_day(DAY, kafka, lake)
    meta = {k: v.value for k, v in result.metadata.items()}
    assert not result.passed
    assert meta["compared"] == 3 and meta["agreeing"] == 1
    assert meta["explained_by_late"] == 1  # the other group's late reading explains nothing
    assert meta["unexplained"] == 1 and meta["examples"] == [f"773869@{windows[2].isoformat()}"]
    assert meta["pending_in_stream"] == 1 and meta["missing_in_stream"] == 0
