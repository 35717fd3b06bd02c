"""Scale-out ingestion workers of one consumer group: the dedupe rule against stored ranges,
flush-and-commit on revocation, and worker processes killed and added mid-stream leaving every
valid event in the lake exactly once and every invalid one in the DLQ exactly once."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import orjson
import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from ingest_helpers import dlq_sources, lake_frame, lake_offsets
from kafka_helpers import (
    end_offsets,
    fresh_topics,
    read_all,
    topic_message_count,
)
from prometheus_client.parser import text_string_to_metric_families

from infra.stack.kafka import KafkaBroker
from serving.publisher_election import PublisherElection
from traffic_core.datasets import load_speed_csv
from traffic_core.events import EventCodec, ValidationConfig
from traffic_core.ingestion.group_worker import GroupIngestWorker, WorkerSettings, split_by_stored
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds
from traffic_core.ingestion.ranges import classify_range, read_range, store_classified
from traffic_core.kafka.topics import TopicSpec, ensure_topics
from traffic_core.lake import OffsetRange, raw_files, stored_offset_ranges
from traffic_core.lake_storage import LakePath, lake_url
from traffic_core.settings import REPO_ROOT

pytestmark = pytest.mark.integration

CODEC = EventCodec()


def test_split_by_stored_never_overlaps_stored_offsets() -> None:
    def r(first: int, last: int) -> OffsetRange:
        return OffsetRange("t", 0, first, last)

    stored = [r(0, 12), r(15, 17), r(16, 20), r(40, 50)]
    assert split_by_stored(r(10, 29), stored) == [
        (r(10, 12), True),
        (r(13, 14), False),
        (r(15, 17), True),
        (r(18, 20), True),
        (r(21, 29), False),
    ]
    assert split_by_stored(r(5, 9), []) == [(r(5, 9), False)]
    assert split_by_stored(r(41, 45), stored) == [(r(41, 45), True)]

    rng = random.Random(7)
    for _ in range(500):
        held = [r(a, a + rng.randrange(8)) for a in rng.sample(range(60), rng.randrange(6))]
        covered = {o for h in held for o in range(h.first, h.last + 1)}
        first = rng.randrange(50)
        whole = r(first, first + rng.randrange(20))
        parts = split_by_stored(whole, held)
        offsets = [o for part, _ in parts for o in range(part.first, part.last + 1)]
        assert offsets == list(range(whole.first, whole.last + 1))
        for part, stored_part in parts:
            inside = {o in covered for o in range(part.first, part.last + 1)}
            assert inside == {stored_part}


def reading(sensor: str, minute: int, speed: float | None = 60.0) -> bytes:
    return CODEC.encode(
        {
            "sensor_id": sensor,
            "event_time": datetime(2012, 3, 1, 8, tzinfo=UTC) + timedelta(minutes=minute),
            "speed_mph": speed,
            "source": "test",
            "is_synthetic": False,
        }
    )


def invalid_value(i: int) -> bytes:
    """Invalid whatever the batch around it (no duplicate-dependent reasons), all distinct."""
    kind = i % 4
    if kind == 0:
        return b"\x00\xff\xfe" + str(i).encode()
    if kind == 1:
        return reading(f"bad-{i}", 10_000 + i, float("nan"))
    if kind == 2:
        return reading(f"bad-{i}", 10_000 + i, -1.0 - i)
    return orjson.dumps({"sensor_id": f"bad-{i}", "speed_mph": 50.0})


def committed(broker: KafkaBroker, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
    finally:
        consumer.close()


def worker_settings(broker: KafkaBroker, lake: Path, topic: str, dlq: str, group: str, name: str):
    return WorkerSettings(
        bootstrap_servers=broker.bootstrap_servers,
        lake_root=lake,
        topic=topic,
        dlq_topic=dlq,
        group_id=group,
        worker_id=name,
        flush_messages=10**9,  # nothing is flushed but by a rebalance or close
        flush_seconds=3600,
        session_timeout_ms=6000,
    )


def poll_until(workers: list[GroupIngestWorker], done, seconds: float = 45.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "condition not reached in time"
        for worker in workers:
            worker.poll(0.1)


def test_revoked_partition_is_flushed_and_stored_offsets_are_not_rewritten(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    events, dlq = fresh_topics(kafka_broker, partitions=2)
    lake, group = tmp_path / "lake", f"writers-{uuid.uuid4().hex[:6]}"
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    bad_offsets = {30, 70}
    for partition in (0, 1):
        for i in range(100):
            value = invalid_value(i) if i in bad_offsets else reading(f"s{partition}", i)
            producer.produce(events, value, partition=partition)
    assert producer.flush(30) == 0

    # What a killed worker leaves: files of 20..49 written, nothing committed, no rejects sent.
    reader = Consumer({"bootstrap.servers": kafka_broker.bootstrap_servers, "group.id": "x"})
    for partition in (0, 1):
        leftover = OffsetRange(events, partition, 20, 49)
        messages = read_range(reader, leftover)
        classified = classify_range(messages, leftover, ValidationConfig(), datetime.now(UTC))
        store_classified(lake, leftover, classified)
    reader.close()

    first = GroupIngestWorker(worker_settings(kafka_broker, lake, events, dlq, group, "w1"))
    first.subscribe()
    poll_until([first], lambda: first.held == {0: 100, 1: 100})
    assert stored_offset_ranges(lake) == [OffsetRange(events, p, 20, 49) for p in (0, 1)]

    second = GroupIngestWorker(worker_settings(kafka_broker, lake, events, dlq, group, "w2"))
    second.subscribe()
    poll_until([first, second], lambda: len(first.held) == 1 and second.consumer.assignment())
    (moved,) = {0, 1} - set(first.held)
    (kept,) = first.held
    assert first.held == {kept: 100}, "the partition that stays keeps its batch (cooperative)"
    assert committed(kafka_broker, group, events, 2)[moved] == 100
    assert stored_offset_ranges(lake, events, moved) == [
        OffsetRange(events, moved, 0, 19),
        OffsetRange(events, moved, 20, 49),
        OffsetRange(events, moved, 50, 99),
    ]
    revoked = first.metrics.registry.get_sample_value(
        "traffic_ingest_rebalances_total", {"event": "revoked"}
    )
    assert revoked == 1

    first.close()
    second.close()
    assert committed(kafka_broker, group, events, 2) == {0: 100, 1: 100}
    stored = lake_offsets(lake)
    assert len(stored) == len(set(stored)) == 2 * 98
    assert set(stored) == {(p, o) for p in (0, 1) for o in range(100) if o not in bad_offsets}
    dead = read_all(kafka_broker, dlq, expected=4)
    assert sorted(dlq_sources(dead)) == [(p, o) for p in (0, 1) for o in sorted(bad_offsets)]
    skipped = first.metrics.registry.get_sample_value(
        "traffic_ingest_already_stored_total", {"topic": events}
    )
    assert skipped == 60, "the stored 20..49 of both partitions was read, not written again"


def test_lost_partition_drops_its_batch(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    events, dlq = fresh_topics(kafka_broker, partitions=1)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    for i in range(10):
        producer.produce(events, reading("s", i), partition=0)
    assert producer.flush(30) == 0
    group = f"writers-{uuid.uuid4().hex[:6]}"
    worker = GroupIngestWorker(worker_settings(kafka_broker, tmp_path, events, dlq, group, "w"))
    worker.subscribe()
    poll_until([worker], lambda: worker.held == {0: 10})
    worker._on_lost(worker.consumer, [TopicPartition(events, 0)])
    assert worker.held == {}
    worker.close()
    assert raw_files(tmp_path) == []
    assert committed(kafka_broker, group, events, 1)[0] < 0, "nothing was committed"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WorkerProcess:
    """`python -m traffic_core.ingestion.group_worker` with its JSON log in a file."""

    def __init__(self, name: str, args: list[str], log_dir: Path, metrics_port: int = 0) -> None:
        self.log = log_dir / f"{name}.log"
        self.metrics_port = metrics_port
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "traffic_core.ingestion.group_worker", "--worker-id", name),
                *(*args, "--metrics-port", str(metrics_port)),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )

    def lines(self) -> list[dict]:
        """Complete lines so far (the last one may still be being written)."""
        lines = []
        for line in self.log.read_bytes().splitlines():
            with suppress(orjson.JSONDecodeError):
                lines.append(orjson.loads(line))
        return lines

    def wait_for(self, message: str, seconds: float = 30.0, with_field: str = "") -> None:
        """Until a log line says message (and has a non-empty with_field)."""
        deadline = time.monotonic() + seconds
        while not any(
            line.get("message") == message and (not with_field or line.get(with_field))
            for line in self.lines()
        ):
            assert self.proc.poll() is None, f"worker exited: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"no {message!r} within {seconds}s"
            time.sleep(0.1)

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def stream_readings(
    bootstrap: str,
    topic: str,
    dlq: str,
    speeds: pd.DataFrame,
    invalid: list[bytes],
    last_chunks_after: threading.Event,
) -> Counter[str]:
    """Real readings a few steps at a time with invalid records between, over a few seconds;
    the last three chunks wait for last_chunks_after (so a worker added meanwhile gets some)."""
    sink = ReadingProducer(bootstrap, topic=topic, dlq_topic=dlq)
    raw = Producer({"bootstrap.servers": bootstrap})
    rejected_by_producer: Counter[str] = Counter()
    chunks = 10
    step = -(-len(speeds) // chunks)
    for c in range(chunks):
        if c == chunks - 3:
            assert last_chunks_after.wait(90), "the added worker got no partitions"
        summary = replay_speeds(
            speeds.iloc[c * step : (c + 1) * step], sink, source="test", is_synthetic=False
        )
        rejected_by_producer += summary.rejected
        for i in range(c, len(invalid), chunks):
            raw.produce(topic, invalid[i], key=f"bad-{i}".encode())
        assert raw.flush(30) == 0
        time.sleep(0.5)
    return rejected_by_producer


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kafka_service", "local_or_hdfs_lake"),
    [("kafka_broker", "local"), ("kafka_cluster", "local"), ("kafka_broker", "hdfs")],
    ids=["1-broker-local", "3-brokers-local", "1-broker-hdfs"],
    indirect=True,
)
def test_workers_killed_and_added_mid_stream_lose_and_duplicate_nothing(
    kafka_service: KafkaBroker, shared_data: Path, tmp_path: Path, local_or_hdfs_lake: LakePath
) -> None:
    events, dlq = fresh_topics(kafka_service, partitions=6)
    lake = local_or_hdfs_lake
    speeds = load_speed_csv(shared_data / "metr-la" / "los_loop_speed_2012-03-01_to_03-06.csv")
    speeds = speeds.iloc[:40]  # 40 steps x 207 sensors = 8,280 readings
    invalid = [invalid_value(i) for i in range(40)]
    args = [
        "--bootstrap-servers",
        kafka_service.bootstrap_servers,
        "--topic",
        events,
        "--dlq-topic",
        dlq,
        "--group-id",
        f"writers-{uuid.uuid4().hex[:6]}",
        "--lake-dir",
        lake_url(lake),
        "--flush-seconds",
        "0.3",
        "--flush-messages",
        "1000",
        "--session-timeout-ms",
        "6000",
        "--no-sensor-catalogue",
    ]
    a = WorkerProcess("a", args, tmp_path)
    b = WorkerProcess("b", args, tmp_path, metrics_port=free_port())
    workers = [a, b]
    c_joined = threading.Event()
    try:
        # The first transactional producer may wait for the broker to create its log.
        a.wait_for("partitions assigned", seconds=120, with_field="partitions")
        b.wait_for("partitions assigned", seconds=60, with_field="partitions")
        outcome: dict[str, Counter[str]] = {}
        streamer = threading.Thread(
            target=lambda: outcome.update(
                rejected=stream_readings(
                    kafka_service.bootstrap_servers, events, dlq, speeds, invalid, c_joined
                )
            ),
            daemon=True,
        )
        streamer.start()
        a.wait_for("committed")
        a.kill()  # SIGKILL mid-stream: no flush, no commit, no leaving the group
        c = WorkerProcess("c", args, tmp_path)
        workers.append(c)
        c.wait_for("partitions assigned", seconds=60, with_field="partitions")
        c_joined.set()
        streamer.join(60)
        assert not streamer.is_alive()
        assert outcome["rejected"] == Counter(), "the real readings are all valid"

        expected_valid = speeds.size
        deadline = time.monotonic() + 60
        while len(lake_offsets(lake)) < expected_valid:
            assert time.monotonic() < deadline, f"lake holds {len(lake_offsets(lake))} only"
            time.sleep(0.5)

        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(b.metrics())
            for s in family.samples
        }
        topic = (("topic", events),)
        assert samples[("traffic_ingest_events_total", topic)] > 0
        assert samples[("traffic_ingest_files_total", topic)] > 0
        # b's share depends on who takes the killed worker's partitions (b or the new c); the
        # lake above is the proof, here only that b counted its assignments.
        assert samples[("traffic_ingest_rebalances_total", (("event", "assigned"),))] >= 1
        assert samples[("traffic_ingest_last_commit_timestamp_seconds", ())] > time.time() - 120
        rejected = "traffic_ingest_rejected_total"
        assert sum(v for (name, _), v in samples.items() if name == rejected) > 0
        lags = [v for (name, _), v in samples.items() if name == "traffic_ingest_consumer_lag"]
        assert lags and all(v >= 0 for v in lags)

        for worker in (b, c):
            worker.proc.send_signal(signal.SIGTERM)
        for worker in (b, c):
            assert worker.proc.wait(30) == 0
            worker.wait_for("left group", seconds=1)
        c.wait_for("batch stored", seconds=1)
    finally:
        c_joined.set()
        for worker in workers:
            worker.kill()

    everything = read_all(kafka_service, events, expected=expected_valid + len(invalid))
    by_value = {m.value(): (m.partition(), m.offset()) for m in everything}
    invalid_at = {by_value[v] for v in invalid}
    valid_at = {(m.partition(), m.offset()) for m in everything} - invalid_at
    assert len(valid_at) == expected_valid

    stored = lake_offsets(lake)
    assert len(stored) == len(set(stored)), "an offset is stored twice"
    assert set(stored) == valid_at

    dead = read_all(kafka_service, dlq, expected=len(invalid), timeout_loops=60)
    assert len(dead) == len(invalid), "every invalid record in the DLQ, exactly once"
    assert set(dlq_sources(dead)) == invalid_at

    for partition in range(6):
        ranges = stored_offset_ranges(lake, events, partition)
        assert all(x.last < y.first for x, y in pairwise(ranges))


def replay_process(bootstrap: str, topic: str, csv: Path, until: pd.Timestamp) -> subprocess.Popen:
    """The real producer replaying the real readings up to `until`, fast enough for a test."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "traffic_core.ingestion.producer", "--data", str(csv)),
            *("--bootstrap-servers", bootstrap, "--topic", topic, "--speedup", "6000"),
            *("--until", str(until), "--no-progress"),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_leader_broker_killed_mid_replay_the_lake_and_the_groups_recover(
    kafka_cluster: KafkaBroker, shared_data: Path, tmp_path: Path
) -> None:
    """SIGKILL the broker leading most partitions while the real readings stream in and two
    lake writers consume them; restart it later. Replication 3 with two in sync keeps every
    acknowledged write, the writers' group and a publisher election carry on."""
    events, dlq = fresh_topics(kafka_cluster, partitions=6)
    csv = shared_data / "metr-la" / "los_loop_speed_2012-03-01_to_03-06.csv"
    speeds = load_speed_csv(csv).iloc[:240]  # 240 steps x 207 sensors = 49,680 readings
    group = f"writers-{uuid.uuid4().hex[:6]}"
    args = [
        *("--bootstrap-servers", kafka_cluster.bootstrap_servers, "--topic", events),
        *("--dlq-topic", dlq, "--group-id", group, "--lake-dir", str(tmp_path / "lake")),
        *("--flush-seconds", "0.3", "--flush-messages", "2000", "--session-timeout-ms", "6000"),
        "--no-sensor-catalogue",
    ]
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers})
    election_topic = f"publisher-{uuid.uuid4().hex[:6]}"
    ensure_topics(admin, [TopicSpec(election_topic, 1)], kafka_cluster.replication)
    election = PublisherElection(kafka_cluster.bootstrap_servers, election_topic, group)
    workers = [WorkerProcess(name, args, tmp_path) for name in ("a", "b")]
    producer = None
    try:
        election.start()
        for worker in workers:
            worker.wait_for("partitions assigned", seconds=120, with_field="partitions")
        assert election.settled.wait(60) and election.leading
        producer = replay_process(kafka_cluster.bootstrap_servers, events, csv, speeds.index[-1])
        workers[0].wait_for("committed", seconds=60)
        assert producer.poll() is None, "the replay must still be running when the leader dies"
        leader = kafka_cluster.leader_of_most(events)
        assert kafka_cluster.kill(leader)
        time.sleep(2)
        kafka_cluster.start()  # the killed node only: the others run
        output, _ = producer.communicate(timeout=300)
        assert producer.returncode == 0, output
        assert "delivery_failures=0" in output, output

        expected = speeds.size
        deadline = time.monotonic() + 120
        while len(lake_offsets(tmp_path / "lake")) < expected:
            assert time.monotonic() < deadline, "the lake misses readings"
            time.sleep(0.5)
        assert all(worker.proc.poll() is None for worker in workers), "a writer died"
        ends = end_offsets(kafka_cluster, events)
        deadline = time.monotonic() + 60
        while committed(kafka_cluster, group, events, 6) != ends:
            assert time.monotonic() < deadline, "the writers' group did not commit to the end"
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while not election.leading:
            assert time.monotonic() < deadline, "the publisher election did not recover"
            time.sleep(0.2)
        for worker in workers:
            worker.proc.send_signal(signal.SIGTERM)
        for worker in workers:  # leaving flushes and commits through a rebalance: slow on 2 cores
            assert worker.proc.wait(120) == 0
    finally:
        election.close()
        if producer is not None and producer.poll() is None:
            producer.kill()
        for worker in workers:
            worker.kill()

    stored = lake_offsets(tmp_path / "lake")
    assert len(stored) == len(set(stored)) == expected, "a reading lost or stored twice"
    assert set(stored) == {(p, o) for p, high in ends.items() for o in range(high)}
    frame = lake_frame(tmp_path / "lake")
    assert not frame.duplicated(["sensor_id", "event_time"]).any()
    assert topic_message_count(kafka_cluster, dlq) == 0
