"""The stream processor on the real broker: exactly-once aggregates across a SIGKILL and a
restart, late readings within and beyond the grace, bad messages to the DLQ without stopping
the stream, two instances sharing the partitions with one killed, and the metrics endpoint."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from api_fixtures import free_port
from confluent_kafka import KafkaException
from prometheus_client.parser import text_string_to_metric_families
from stream_helpers import (
    StreamTopics,
    admin_client,
    assert_exact_windows,
    epoch_ms,
    eventually,
    group_offsets,
    kill,
    read_aggregates,
    read_to_end,
    reading,
    send,
    send_readings,
    start_processor,
    stop,
    stream_topics,
    wait_processed,
)

from infra.stack.kafka import KafkaBroker
from traffic_core.streams.processor import CONSUMER_HEADER

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def synthetic_readings(sensors: int, days: float, seed: int) -> pd.DataFrame:
    """Readings every 5 minutes from 2012-03-01 in send order: random speeds, 5% missing, and
    1% corrected by a later resend of the same sensor and time."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2012-03-01", periods=int(288 * days), freq="5min", tz="UTC")
    frame = pd.DataFrame(
        {
            "sensor_id": np.tile([f"s{i:03d}" for i in range(sensors)], len(times)),
            "event_time": np.repeat(times, sensors),
            "speed_mph": rng.uniform(5, 75, len(times) * sensors).round(3),
        }
    )
    frame.loc[rng.random(len(frame)) < 0.05, "speed_mph"] = np.nan
    resent = frame[rng.random(len(frame)) < 0.01].assign(speed_mph=lambda f: f.speed_mph + 1)
    order = np.concatenate([np.arange(len(frame)), resent.index.to_numpy() + 0.5])
    both = pd.concat([frame, resent], ignore_index=True)
    return both.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)


def rows(frame: pd.DataFrame) -> list[tuple[str, pd.Timestamp, float | None]]:
    speeds = [None if np.isnan(v) else float(v) for v in frame["speed_mph"]]
    return list(zip(frame["sensor_id"], frame["event_time"], speeds, strict=True))


def committed_total(broker: KafkaBroker, topics: StreamTopics) -> int:
    committed, _ = group_offsets(broker, f"stream-{topics.group}", topics.events)
    return sum(max(offset, 0) for offset in committed.values())


def wait_for_progress(broker: KafkaBroker, topics: StreamTopics, at_least: int) -> int:
    def done() -> int | None:
        total = committed_total(broker, topics)
        return total if total >= at_least else None

    return eventually(done, 300, f"{at_least} readings committed", every=0.2)


def first_half_sent(broker: KafkaBroker, seed: int) -> tuple[StreamTopics, pd.DataFrame, int]:
    """Fresh topics, two days of 40 sensors' readings, and the first half of them sent."""
    topics = stream_topics(broker)
    readings = synthetic_readings(sensors=40, days=2, seed=seed)
    half = len(readings) // 2
    send_readings(broker, topics.events, rows(readings.iloc[:half]))
    return topics, readings, half


def test_aggregates_exactly_once_across_sigkill_and_restart(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    topics, readings, half = first_half_sent(kafka_broker, seed=3)
    first = start_processor(kafka_broker, topics, "a", tmp_path)
    try:
        wait_for_progress(kafka_broker, topics, half // 5)
        kill(first)
    finally:
        stop(first)
    assert committed_total(kafka_broker, topics) < half, "the kill came after the work was done"
    send_readings(kafka_broker, topics.events, rows(readings.iloc[half:]))
    restarted = start_processor(kafka_broker, topics, "a", tmp_path)
    try:
        wait_processed(kafka_broker, topics, [restarted])
    finally:
        stop(restarted)
    assert_exact_windows(read_aggregates(kafka_broker, topics.aggregates), readings)


def test_two_instances_share_partitions_and_one_takes_over_from_a_killed_one(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    topics, readings, half = first_half_sent(kafka_broker, seed=4)
    a = start_processor(kafka_broker, topics, "a", tmp_path)
    b = start_processor(kafka_broker, topics, "b", tmp_path)
    try:
        owners = wait_for_two_owners(kafka_broker, topics)
        assert owners["a"] and owners["b"] and not owners["a"] & owners["b"]
        wait_for_progress(kafka_broker, topics, half // 5)
        kill(a)
        send_readings(kafka_broker, topics.events, rows(readings.iloc[half:]))
        wait_processed(kafka_broker, topics, [b])
    finally:
        stop(a)
        stop(b)
    assert_exact_windows(read_aggregates(kafka_broker, topics.aggregates), readings)


def wait_for_two_owners(broker: KafkaBroker, topics: StreamTopics) -> dict[str, set[int]]:
    """Readings partitions owned by each instance once the group has both."""
    admin = admin_client(broker.bootstrap_servers)
    group = f"stream-{topics.group}"

    def owners() -> dict[str, set[int]] | None:
        try:
            description = admin.describe_consumer_groups([group])[group].result(10)
        except KafkaException:  # the coordinator is still being found or loaded
            return None
        found = {
            member.client_id.removeprefix("stream-"): {
                tp.partition
                for tp in member.assignment.topic_partitions
                if tp.topic == topics.events
            }
            for member in description.members
        }
        return found if len(found) == 2 and all(found.values()) else None

    return eventually(owners, 180, "two instances in the group, each with partitions")


def test_late_readings_within_and_beyond_grace_and_bad_messages(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    topics = stream_topics(kafka_broker, partitions=1)
    port = free_port()
    late = reading("s1", "2012-03-01 00:02", 99.0)
    story = [
        (b"s1", reading("s1", "2012-03-01 00:00", 50.0), 0),
        (b"s1", reading("s1", "2012-03-01 00:06", 60.0), 0),
        (b"s1", reading("s1", "2012-03-01 00:03", 40.0), 0),  # after its window's end, in grace
        (b"s1", reading("s1", "2012-03-01 00:00", 55.0), 0),  # a correction replaces 50.0
        (b"s1", b"\x00\x00\x00\x00\x01garbage", 0),  # reading schema id, broken body
        (b"s1", b"not a reading at all", 0),
        (b"s2", reading("s1", "2012-03-01 00:07", 61.0), 0),  # keyed by another sensor
        (b"s1", reading("s1", "2012-03-01 00:10", 70.0), 0),  # closes [00:00, 00:05)
        (b"s1", late, 0),  # its window closed: beyond grace
        (b"s1", reading("s1", "2012-03-01 00:16", 65.0), 0),
        (b"s1", reading("s1", "2012-03-01 00:30", None), 0),  # closes up to [00:15, 00:20)
    ]
    send(kafka_broker, topics.events, [(k, v, epoch_ms("2012-03-01")) for k, v, _ in story])
    processor = start_processor(kafka_broker, topics, "a", tmp_path, "--metrics-port", str(port))
    try:
        wait_processed(kafka_broker, topics, [processor])
        assert processor.poll() is None, "a bad message stopped the stream"
        metrics = scrape_until_polled(port)
    finally:
        stop(processor)

    stream = read_aggregates(kafka_broker, topics.aggregates).sort_values("window_start")
    assert stream["window_start"].dt.strftime("%H:%M").tolist() == [
        "00:00",
        "00:05",
        "00:10",
        "00:15",
    ]
    assert stream["speed_mean"].tolist() == [47.5, 60.0, 70.0, 65.0]
    assert stream["reading_count"].tolist() == [2, 1, 1, 1]

    dlq = read_to_end(kafka_broker, topics.dlq)
    headers = [{k: v.decode() for k, v in m.headers()} for m in dlq]
    reasons = sorted(h["dlq.reason"] for h in headers)
    assert reasons == ["KEY_MISMATCH", "LATE_READING", "UNDECODABLE", "UNDECODABLE"]
    late_record = next(
        m for m, h in zip(dlq, headers, strict=True) if h["dlq.reason"] == "LATE_READING"
    )
    late_headers = dict((k, v.decode()) for k, v in late_record.headers())
    assert late_record.value() == late and late_record.key() == b"s1"
    assert late_headers["dlq.source.topic"] == topics.events
    assert late_headers["dlq.source.offset"] == "8"
    assert late_headers[CONSUMER_HEADER] == f"stream-{topics.group}"

    assert metrics["traffic_stream_windows_emitted_total"] == 4
    assert metrics["traffic_stream_late_readings_total"] == 1
    assert metrics["traffic_stream_readings_total"] == 7
    assert metrics["traffic_stream_commit_seconds_count"] >= 1
    assert metrics["traffic_stream_state_bytes"] > 0
    assert metrics['traffic_stream_consumer_lag{partition="0"}'] == 0


def scrape_until_polled(port: int) -> dict[str, float]:
    """Samples of the metrics endpoint once the poller has measured state and lag."""

    def polled() -> dict[str, float] | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        samples = {
            sample.name + _labels(sample.labels): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        lag_measured = any(
            name.startswith("traffic_stream_consumer_lag{") and value == 0
            for name, value in samples.items()
        )
        return samples if lag_measured and samples["traffic_stream_state_bytes"] > 0 else None

    return eventually(polled, 60, "the metrics poller measured state and lag", every=1.0)


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
