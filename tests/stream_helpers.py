"""Helpers for tests of the stream processor on the real test broker: topics of their own,
processor instances as child processes, readings in, committed aggregates out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from infra.stack.kafka import KafkaBroker
from traffic_core import windows as w
from traffic_core.events import AGGREGATE, EventCodec, encode_reading
from traffic_core.kafka.offsets import group_positions
from traffic_core.kafka.topics import TopicSpec, ensure_topics
from traffic_core.settings import REPO_ROOT

T = TypeVar("T")
GRACE_SECONDS = 300
FLOATS = ["speed_mean", "speed_min", "speed_max", "speed_std", "share_missing"]


@dataclass(frozen=True)
class StreamTopics:
    events: str
    aggregates: str
    dlq: str
    group: str


def stream_topics(broker: KafkaBroker, partitions: int = 6) -> StreamTopics:
    suffix = uuid.uuid4().hex[:8]
    topics = StreamTopics(f"events-{suffix}", f"aggregates-{suffix}", f"dlq-{suffix}", suffix)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    specs = [TopicSpec(topics.events, partitions), TopicSpec(topics.aggregates, 3)]
    ensure_topics(admin, [*specs, TopicSpec(topics.dlq, 1)])
    return topics


def start_processor(
    broker: KafkaBroker,
    topics: StreamTopics,
    instance_id: str,
    state_dir: Path,
    *extra: str,
) -> subprocess.Popen[bytes]:
    log = (state_dir / f"{instance_id}.log").open("ab")
    command = [
        sys.executable,
        "-m",
        "traffic_core.streams",
        "--bootstrap-servers",
        broker.bootstrap_servers,
        "--events-topic",
        topics.events,
        "--aggregates-topic",
        topics.aggregates,
        "--dlq-topic",
        topics.dlq,
        "--group-id",
        f"stream-{topics.group}",
        "--instance-id",
        instance_id,
        "--state-dir",
        str(state_dir / "state"),
        "--grace-seconds",
        str(GRACE_SECONDS),
        "--commit-interval",
        "0.5",
        "--transaction-timeout-ms",
        "10000",
        "--session-timeout-ms",
        "6000",
        "--metrics-port",
        "0",
        "--no-sensor-catalogue",
        *extra,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=log, env=env)


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(30)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            kill(process)


def epoch_ms(stamp: str | datetime) -> int:
    moment = pd.Timestamp(stamp)
    moment = moment.tz_localize("UTC") if moment.tz is None else moment.tz_convert("UTC")
    return int(moment.value // 1_000_000)


def reading(sensor: str, stamp: str | datetime, speed: float | None) -> bytes:
    return encode_reading(
        {
            "sensor_id": sensor,
            "event_time": datetime.fromtimestamp(epoch_ms(stamp) / 1000, UTC),
            "speed_mph": speed,
            "source": "test",
        }
    )


def send(
    broker: KafkaBroker, topic: str, messages: Iterable[tuple[bytes | None, bytes | None, int]]
) -> None:
    """(key, value, timestamp ms) in order; waits until all are acknowledged."""
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True, "linger.ms": 5}
    )
    for key, value, timestamp in messages:
        producer.produce(topic, value, key, timestamp=timestamp)
        producer.poll(0)
    assert producer.flush(60) == 0


def send_readings(
    broker: KafkaBroker, topic: str, rows: Iterable[tuple[str, str | datetime, float | None]]
) -> None:
    send(
        broker,
        topic,
        ((s.encode(), reading(s, t, v), epoch_ms(t)) for s, t, v in rows),
    )


def group_offsets(
    broker: KafkaBroker, group: str, topic: str
) -> tuple[dict[int, int], dict[int, int]]:
    """(committed offset, high watermark) per partition of topic for a consumer group; asks
    again while the group's coordinator is still being found or loaded."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    try:
        for attempt in range(60):
            try:
                positions = group_positions(consumer, topic)
                break
            except KafkaException:
                if attempt == 59:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()
    committed = {p: done for p, (done, _) in positions.items()}
    return committed, {p: high for p, (_, high) in positions.items()}


@cache
def admin_client(bootstrap_servers: str) -> AdminClient:
    """One admin client per broker for the whole session."""
    return AdminClient({"bootstrap.servers": bootstrap_servers})


def eventually(probe: Callable[[], T | None], timeout: float, what: str, every: float = 0.5) -> T:
    """The probe's first answer other than None, asking every `every` s for up to `timeout` s."""
    deadline = time.monotonic() + timeout
    while (answer := probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(every)
    return answer


def wait_processed(
    broker: KafkaBroker,
    topics: StreamTopics,
    processes: Iterable[subprocess.Popen[bytes]],
    timeout: float = 600.0,
) -> None:
    """Until the group has committed every message of the readings topic."""
    processes = list(processes)

    def all_committed() -> bool | None:
        assert any(p.poll() is None for p in processes), "every processor instance exited"
        committed, highs = group_offsets(broker, f"stream-{topics.group}", topics.events)
        return all(committed.get(p, -1) >= high for p, high in highs.items()) or None

    eventually(all_committed, timeout, "every reading processed and committed", every=1.0)


def read_to_end(broker: KafkaBroker, topic: str) -> list[Message]:
    """Every message a read_committed consumer sees, once no transaction is open on the topic:
    a partition counts as read when its end of committed data is its high watermark (a killed
    producer's open transaction holds that end back until the broker aborts it)."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": f"read-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    messages: list[Message] = []
    done: set[int] = set()
    deadline = time.monotonic() + 180
    try:
        while len(done) < len(partitions) and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                error = message.error()
                if error is None:
                    messages.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    tp = TopicPartition(topic, message.partition())
                    high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
                    if message.offset() >= high:
                        done.add(message.partition())
    finally:
        consumer.close()
    assert len(done) == len(partitions), f"only partitions {sorted(done)} were read to the end"
    return messages


def read_aggregates(broker: KafkaBroker, topic: str) -> pd.DataFrame:
    """The committed aggregate records as a frame (key checked to be the sensor id)."""
    codec = EventCodec(AGGREGATE)
    rows = []
    for message in read_to_end(broker, topic):
        record = codec.decode(message.value())
        assert message.key() == record["sensor_id"].encode()
        rows.append(record)
    return pd.DataFrame(rows, columns=[f["name"] for f in codec.schema["fields"]])


def closed_windows(readings: pd.DataFrame) -> pd.DataFrame:
    """Windows of readings (sensor_id, event_time, ...) that end + grace has passed: those the
    stream has closed once every reading is in."""
    start = readings["event_time"].dt.floor("5min")
    latest = readings.groupby("sensor_id")["event_time"].transform("max")
    closed = start + pd.Timedelta("5min") + pd.Timedelta(seconds=GRACE_SECONDS) <= latest
    return readings[closed]


def assert_exact_windows(stream: pd.DataFrame, readings: pd.DataFrame) -> None:
    """Each closed (sensor, window) exactly once, with the numbers of `traffic_core.windows`."""
    keys = stream[["sensor_id", "window_start"]]
    assert not keys.duplicated().any(), f"{keys.duplicated().sum()} windows emitted twice"
    expected = w.aggregate_windows(closed_windows(readings))
    actual = stream.assign(window_start=w.to_utc(stream["window_start"]))
    actual = actual.sort_values(["sensor_id", "window_start"]).reset_index(drop=True)
    assert len(actual) == len(expected)
    for column in w.AGGREGATE_COLUMNS:
        a, e = actual[column], expected[column]
        if column in FLOATS:
            np.testing.assert_allclose(a.astype(float), e, rtol=0, atol=1e-9, err_msg=column)
        else:
            assert a.astype(e.dtype).tolist() == e.tolist(), column


def aggregate_record(sensor: str, start: datetime, count: int = 2, mean: float = 61.0) -> dict:
    """A `traffic_aggregate` record as the processor writes one."""
    return {
        "sensor_id": sensor,
        "window_start": start,
        "window_end": start + timedelta(minutes=5),
        "speed_mean": mean,
        "speed_min": mean,
        "speed_max": mean,
        "speed_std": None,
        "reading_count": count,
        "valid_count": count,
        "share_missing": 0.0,
        "quality_flag": "ok",
        "congestion": "free_flow",
        "is_synthetic": True,
        "emitted_at": start + timedelta(minutes=10),
    }
