"""The stream's output as a Dagster asset: observations read from the real broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer, Producer
from dagster import Definitions
from stream_helpers import aggregate_record, stream_topics

from infra.stack.kafka import KafkaBroker
from resources.kafka import KafkaResource
from sensors.stream_observation import observe_stream_job
from traffic_assets.streams.aggregates_stream import traffic_aggregates_stream
from traffic_core.events import AGGREGATE, EventCodec
from traffic_core.ingestion.ranges import commit_after
from traffic_core.lake import OffsetRange

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = datetime(2012, 3, 6, 8, 0, tzinfo=UTC)


def test_observation_reports_records_per_day_newest_window_and_lag(
    kafka_broker: KafkaBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topics = stream_topics(kafka_broker)
    monkeypatch.setenv("TRAFFIC_STREAM_GROUP_ID", topics.group)
    events, aggregates, group = topics.events, topics.aggregates, topics.group

    # Windows in transactions, stamped with their start (as the processor writes them): one
    # older than the week counted per day, one the evening before, three on the day, and one
    # aborted (not counted).
    codec = EventCodec(AGGREGATE)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": group})
    producer.init_transactions()

    def window(start: datetime, partition: int, commit: bool = True) -> None:
        producer.begin_transaction()
        record = codec.encode(aggregate_record("773869", start))
        stamp = int(start.timestamp() * 1000)
        producer.produce(aggregates, record, b"773869", partition=partition, timestamp=stamp)
        (producer.commit_transaction if commit else producer.abort_transaction)()

    window(START - timedelta(days=15), 0)
    window(START - timedelta(hours=8, minutes=5), 1)
    for minutes, partition in ((0, 0), (5, 1), (15, 0)):
        window(START + timedelta(minutes=minutes), partition)
    window(START + timedelta(hours=5), 1, commit=False)

    # Five readings; the processor's group has committed two of them.
    plain = Producer({"bootstrap.servers": bootstrap})
    for i in range(5):
        plain.produce(events, f"reading-{i}".encode(), b"773869", partition=0)
    plain.flush(10)
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    commit_after(committer, OffsetRange(events, 0, 0, 1))  # offset 2, once a coordinator is up
    committer.close()

    kafka = KafkaResource(
        bootstrap_servers=bootstrap, events_topic=events, aggregates_topic=aggregates
    )
    defs = Definitions(
        assets=[traffic_aggregates_stream], jobs=[observe_stream_job], resources={"kafka": kafka}
    )
    result = defs.resolve_job_def("observe_aggregates_stream").execute_in_process()
    assert result.success
    [observation] = result.get_asset_observation_events()
    metadata = observation.asset_observation_data.asset_observation.metadata
    assert metadata["lag_readings"].value == 3
    assert metadata["last_window_end"].value == (START + timedelta(minutes=20)).timestamp()
    # Committed records: 3 windows; the transaction markers take offsets but are no records
    # a reader sees, so the per-partition figures are offsets and at least the windows.
    assert metadata["records"].value >= 5
    assert metadata["records_per_day"].value == {"2012-03-05": 1, "2012-03-06": 3}
