"""Stream == batch == API on the six real METR-LA days: the six days are replayed into a topic,
the stream processor aggregates them, the lake writers' range ingestion stores the same offsets
and `traffic_core.windows` aggregates the lake (the definition Spark is proven to equal), and the
API's live consumer rebuilds its own windows from the same topic.
Every window the stream has closed equals the batch window (counts exactly, numbers to 1e-9) and
the API's window (speed and congestion class), so the API may keep its own windows: reading
`traffic-aggregates` would add the stream's window-close latency to every pushed forecast."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer
from stream_helpers import (
    assert_exact_windows,
    group_offsets,
    read_aggregates,
    read_to_end,
    start_processor,
    stop,
    stream_topics,
    wait_processed,
)

from infra.stack.kafka import KafkaBroker
from serving.live import LiveConsumer, LiveWindows
from traffic_core.datasets import load_speed_csv
from traffic_core.ingestion.config import validation_config
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds
from traffic_core.ingestion.ranges import RANGE_CONSUMER_CONFIG, ingest_ranges
from traffic_core.lake import OffsetRange, read_raw_day
from traffic_core.windows import DEFAULT_THRESHOLDS, to_utc

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAYS = [date(2012, 3, d) for d in range(1, 7)]
SPAN_HOURS = 24 * len(DAYS) + 1


def test_stream_equals_batch_on_the_six_real_days(
    kafka_broker: KafkaBroker, shared_data: Path, tmp_path: Path
) -> None:
    topics = stream_topics(kafka_broker, partitions=12)
    speeds = load_speed_csv(shared_data / "metr-la" / "los_loop_speed_2012-03-01_to_03-06.csv")
    sink = ReadingProducer(kafka_broker.bootstrap_servers, topics.events, topics.dlq)
    summary = replay_speeds(speeds, sink, source="metr-la", is_synthetic=False)
    assert summary.events == speeds.size == 357_696

    processor = start_processor(kafka_broker, topics, "a", tmp_path)
    try:
        wait_processed(kafka_broker, topics, [processor], timeout=1800)
    finally:
        stop(processor)
    stream = read_aggregates(kafka_broker, topics.aggregates)

    lake = tmp_path / "lake"
    _, highs = group_offsets(kafka_broker, f"stream-{topics.group}", topics.events)
    ranges = [OffsetRange(topics.events, p, 0, high - 1) for p, high in highs.items() if high]
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap_servers,
            "group.id": f"lake-{topics.group}",
            "enable.auto.commit": False,
            **RANGE_CONSUMER_CONFIG,
        }
    )
    dlq = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    try:
        report = ingest_ranges(
            consumer, dlq, lake, ranges, validation_config(None), dlq_topic=topics.dlq
        )
    finally:
        consumer.close()
    assert report.accepted == summary.events
    batch = pd.concat([read_raw_day(lake, day) for day in DAYS], ignore_index=True)

    assert read_to_end(kafka_broker, topics.dlq) == []  # nothing late, nothing rejected
    assert len(stream) == len(batch) - 2 * speeds.shape[1]  # each sensor's last two stay open
    assert_exact_windows(stream, batch)
    assert_api_windows_equal(stream, api_windows(kafka_broker, topics.events, speeds.columns))


def api_windows(broker: KafkaBroker, topic: str, sensors: pd.Index) -> pd.DataFrame:
    """Every window of `topic` as the API's live consumer rebuilds it (wide: window x sensor)."""
    state = LiveWindows(sensors, hours=SPAN_HOURS)
    consumer = LiveConsumer(broker.bootstrap_servers, topic, state, rebuild_hours=SPAN_HOURS)
    consumer.start()
    try:
        assert consumer.wait_ready(600), consumer.failure
    finally:
        consumer.stop()
    assert consumer.rejected() == {}
    return state.speeds()


def assert_api_windows_equal(stream: pd.DataFrame, live: pd.DataFrame) -> None:
    """The API's speed and class of each (sensor, window) the stream closed are the stream's.
    The API keeps one reading per window (the latest) where the stream averages; METR-LA has
    one reading per sensor and window, which is what makes both the same number."""
    assert (stream["reading_count"] == 1).all()
    rows = live.index.get_indexer(to_utc(stream["window_start"]))
    columns = live.columns.get_indexer(stream["sensor_id"].astype(str))
    assert (rows >= 0).all() and (columns >= 0).all()
    speeds = live.to_numpy()[rows, columns]
    expected = stream["speed_mean"].to_numpy("float64")
    np.testing.assert_allclose(speeds, expected, rtol=0, atol=1e-9)  # NaN only where NaN
    assert DEFAULT_THRESHOLDS.classify(speeds).tolist() == stream["congestion"].tolist()
