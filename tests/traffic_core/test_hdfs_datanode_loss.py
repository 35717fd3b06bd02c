"""The lake on HDFS (replication 2, two DataNodes) loses a DataNode in the middle of an
ingestion run: the run succeeds, or fails and its rerun writes the same bytes as a clean run,
and every file stays readable from the DataNode left."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from ingest_helpers import file_digests, lake_frame
from kafka_helpers import fresh_topics

from infra.stack.hdfs import HdfsCluster
from infra.stack.kafka import KafkaBroker
from infra.stack.process import wait_until
from traffic_core.datasets import load_speed_csv
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds
from traffic_core.ingestion.ranges import RangeOutcome, ingest_ranges
from traffic_core.lake import OffsetRange
from traffic_core.lake_storage import LakePath, lake_path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 120  # 120 x 207 = 24,840 readings
PARTITIONS = 3
CHUNK = 1_000  # offsets per range: ~25 range files, so most are written after the kill
KILLED = 1
RERUNS = 3
RECHECK_SECONDS = 2.0  # dfs.namenode.heartbeat.recheck-interval of the test cluster


def block_files(cluster: HdfsCluster, index: int) -> list[Path]:
    """Finalized block replicas a DataNode holds on disk."""
    folder = cluster.state_dir / f"datanode-{index}"
    return [p for p in folder.rglob("finalized/**/blk_*") if not p.name.endswith(".meta")]


def rerun_until_done(run: Callable[[], None], attempts: int) -> int:
    """Run until one run succeeds; returns how many it took (fails after `attempts`)."""
    for attempt in range(1, attempts + 1):
        try:
            run()
            return attempt
        except (RuntimeError, OSError) as failure:
            print(f"rerun {attempt} failed ({failure!r})")
            if attempt == attempts:
                raise
            time.sleep(RECHECK_SECONDS)
    raise AssertionError("no attempt")


@pytest.fixture
def restored_datanode(hdfs_cluster: HdfsCluster) -> Iterator[HdfsCluster]:
    """The session's cluster, with the killed DataNode back (and live) after the test."""
    yield hdfs_cluster
    hdfs_cluster.start_datanode(KILLED)


def test_datanode_killed_mid_ingest_loses_nothing_and_reads_go_on(
    kafka_broker: KafkaBroker,
    restored_datanode: HdfsCluster,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    cluster = restored_datanode
    events, dlq = fresh_topics(kafka_broker, partitions=PARTITIONS)
    speeds = load_speed_csv(shared_data / "metr-la" / "los_loop_speed_2012-03-01_to_03-06.csv")
    sink = ReadingProducer(kafka_broker.bootstrap_servers, topic=events, dlq_topic=dlq)
    produced = replay_speeds(speeds.iloc[:STEPS], sink, source="metr-la", is_synthetic=False)
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap_servers, "group.id": "dn"})
    ranges = []
    for partition in range(PARTITIONS):
        _, high = consumer.get_watermark_offsets(TopicPartition(events, partition), timeout=10)
        ranges += [
            OffsetRange(events, partition, first, min(first + CHUNK, high) - 1)
            for first in range(0, high, CHUNK)
        ]
    dlq_producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    lake = lake_path(f"{cluster.url}/tests/datanode-loss/{events}")
    replicas_before_kill: list[int] = []

    def kill_after_first(outcome: RangeOutcome) -> None:
        if not replicas_before_kill:
            replicas_before_kill.extend(len(block_files(cluster, i)) for i in (0, 1))
            assert cluster.kill_datanode(KILLED)

    def ingest(root: LakePath, after_range: Callable[[RangeOutcome], None] | None = None) -> None:
        ingest_ranges(consumer, dlq_producer, root, ranges, dlq_topic=dlq, after_range=after_range)

    first_run_failed = False
    try:
        ingest(lake, after_range=kill_after_first)
    except (RuntimeError, OSError) as failure:  # hdfs-native's errors, and IngestError
        first_run_failed = True
        print(f"the run failed with a DataNode down ({failure!r}); rerunning")
    assert not cluster.datanode(KILLED).running()
    # Both DataNodes held a replica of what was written before the kill ...
    assert all(count > 0 for count in replicas_before_kill), replicas_before_kill
    # ... and it reads at once from the one left, before the NameNode knows of the loss.
    assert len(lake_frame(lake)) >= CHUNK
    if first_run_failed:
        # New blocks may still be placed on the dead DataNode until the NameNode declares it
        # dead and its next recheck (every 2 s) drops it from placement; the reruns come after
        # that is reported, as a run retried by the orchestrator would.
        assert wait_until(lambda: cluster.live_datanodes() == 1, 60.0)
        rerun_until_done(lambda: ingest(lake), attempts=RERUNS)
    ingest(tmp_path / "clean")
    consumer.close()

    assert file_digests(lake) == file_digests(tmp_path / "clean")
    stored = lake_frame(lake)  # read with one DataNode of two left
    assert len(stored) == produced.events == STEPS * speeds.shape[1]
    assert not stored.duplicated(["sensor_id", "event_time"]).any()
