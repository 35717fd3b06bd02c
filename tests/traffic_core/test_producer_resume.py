"""A resumed replay (`--resume`, what `make demo` runs) continues its topic from the newest event
time it holds: a rerun resends at most that one step instead of the whole data, so no reader
sees the whole replay again as late or duplicate readings."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from confluent_kafka import Consumer
from kafka_helpers import fresh_topics

from infra.stack.kafka import KafkaBroker
from traffic_core.ingestion.producer import main
from traffic_core.kafka.read_back import from_beginning, read_to_end

pytestmark = pytest.mark.integration

SENSORS = ["773869", "767541", "767542"]


def speeds_csv(path: Path, hours: float) -> Path:
    index = pd.date_range("2012-03-01", periods=int(hours * 12), freq="5min", name="timestamp")
    frame = pd.DataFrame(
        {s: [60.0 + (i + k) % 7 for i in range(len(index))] for k, s in enumerate(SENSORS)},
        index=index,
    )
    frame.to_csv(path)
    return path


def replay(broker: KafkaBroker, topic: str, data: Path, *extra: str) -> None:
    args = ["--data", str(data), "--bootstrap-servers", broker.bootstrap_servers]
    assert main([*args, "--topic", topic, "--no-progress", *extra]) == 0


def event_times(broker: KafkaBroker, topic: str) -> pd.Series:
    """The Kafka timestamps (the readings' event times) of every record in the topic."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "times"})
    try:
        stamps = [m.timestamp()[1] for m in read_to_end(consumer, topic, from_beginning, 60)]
    finally:
        consumer.close()
    return pd.to_datetime(pd.Series(stamps), unit="ms")


def test_a_resumed_replay_sends_only_what_the_topic_lacks(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    topic, _dlq = fresh_topics(kafka_broker, partitions=3)
    first = speeds_csv(tmp_path / "first.csv", hours=1)
    whole = speeds_csv(tmp_path / "whole.csv", hours=2)

    replay(kafka_broker, topic, first, "--resume")  # an empty topic: everything
    assert len(event_times(kafka_broker, topic)) == 12 * len(SENSORS)

    replay(kafka_broker, topic, whole, "--resume")  # the newest step again, then the rest
    stamps = event_times(kafka_broker, topic)
    newest_first = pd.Timestamp("2012-03-01 00:55")
    assert len(stamps) == (24 + 1) * len(SENSORS)
    assert (stamps == newest_first).sum() == 2 * len(SENSORS)
    assert stamps.max() == pd.Timestamp("2012-03-01 01:55")

    replay(kafka_broker, topic, first, "--resume")  # the topic is ahead: nothing sent
    assert len(event_times(kafka_broker, topic)) == (24 + 1) * len(SENSORS)
