"""End-to-end ingestion throughput: simulated readings -> producer -> Kafka -> lake files.

Starts its own broker (ports 39092/39093, state under .local/bench), simulates N days of
SYNTHETIC readings for 207 sensors, replays them as fast as possible, then ingests every offset
range into a fresh lake with W worker processes (each its own consumer over a share of the
partitions, as the Dagster runs do). Then the `pipelined` figure: the same readings go to a second
topic while W follower processes ingest each new offset range as its watermark moves, timed from
the first produce to the last file durable. Prints one JSON line of figures.

    .venv/bin/python bench/ingest_throughput.py --days 28 --workers 2

With --schema-registry the producer and the workers take their wire ids from a registry service
of the bench's own (port - 11), as the stack runs them; without, they use the built-in ids.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.stack.kafka import KafkaBroker
from infra.stack.web import registry_service
from traffic_core.events.registry_client import register_event_schemas
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds
from traffic_core.ingestion.ranges import RANGE_CONSUMER_CONFIG, ingest_ranges
from traffic_core.kafka.topics import TopicSpec, ensure_topics
from traffic_core.lake import OffsetRange, raw_files
from traffic_core.settings import LOCAL_STATE_DIR
from traffic_core.simulation import simulate

EVENTS, PIPELINED, DLQ = "bench-events", "bench-events-pipelined", "bench-dlq"
POLL_SECONDS = 0.5


def machine() -> dict[str, object]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version()}


def bench_broker(state_dir: Path, port: int) -> KafkaBroker:
    """A broker of a bench's own: its state folder, `port` and the controller on port + 1."""
    return KafkaBroker(
        state_dir=state_dir,
        libs_dir=LOCAL_STATE_DIR / "kafka" / "libs",
        port=port,
        controller_port=port + 1,
        heap="1g",
    )


def ingest_share(bootstrap: str, lake: str, ranges: list[OffsetRange]) -> int:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-ingest", **RANGE_CONSUMER_CONFIG}
    )
    try:
        report = ingest_ranges(
            consumer,
            Producer({"bootstrap.servers": bootstrap}),
            Path(lake),
            ranges,
            dlq_topic=DLQ,
        )
    finally:
        consumer.close()
    return report.accepted


def follow_share(
    bootstrap: str, lake: str, partitions: list[int], ready: Any, produced: Any
) -> tuple[int, float]:
    """Ingest each partition's new offsets as they appear until the producer has flushed.

    Returns the readings stored and the wall-clock time the last of their files was durable.
    """
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-follow", **RANGE_CONSUMER_CONFIG}
    )
    dlq = Producer({"bootstrap.servers": bootstrap})
    next_offset = dict.fromkeys(partitions, 0)
    stored, durable_at = 0, time.time()
    ready.put(os.getpid())
    try:
        while True:
            final = produced.is_set()  # read before the watermarks: later ones include it all
            ranges = []
            for p in partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(PIPELINED, p), timeout=10)
                if high > next_offset[p]:
                    ranges.append(OffsetRange(PIPELINED, p, next_offset[p], high - 1))
                    next_offset[p] = high
            if ranges:
                stored += ingest_ranges(consumer, dlq, Path(lake), ranges, dlq_topic=DLQ).accepted
                durable_at = time.time()
            elif final:
                return stored, durable_at
            else:
                time.sleep(POLL_SECONDS)
    finally:
        consumer.close()


def produce_then_ingest(
    bootstrap: str,
    speeds: pd.DataFrame,
    lake: Path,
    partitions: int,
    workers: int,
    topic: str = EVENTS,
) -> dict[str, Any]:
    """Replay `speeds` into `topic` as fast as possible, then ingest every partition's offset
    range with `workers` processes; the stage figures and their end-to-end rate."""
    sink = ReadingProducer(bootstrap, topic=topic, dlq_topic=DLQ)
    produced = replay_speeds(speeds, sink, source="synthetic", is_synthetic=True)

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "b"})
    ranges = []
    for p in range(partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        ranges.append(OffsetRange(topic, p, low, high - 1))
    consumer.close()
    shares = [ranges[i::workers] for i in range(workers)]
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        stored = sum(pool.map(ingest_share, [bootstrap] * workers, [str(lake)] * workers, shares))
    ingest_seconds = time.perf_counter() - started
    assert stored == produced.events, (stored, produced.events)
    return {
        "events": produced.events,
        "produce_seconds": round(produced.seconds, 2),
        "produce_events_per_s": round(produced.events_per_second),
        "ingest_seconds": round(ingest_seconds, 2),
        "ingest_events_per_s": round(stored / ingest_seconds),
        "end_to_end_events_per_s": round(stored / (produced.seconds + ingest_seconds)),
        "lake_files": len(raw_files(lake)),
    }


def pipelined(
    bootstrap: str, speeds: pd.DataFrame, lake: Path, partitions: int, workers: int
) -> dict[str, float]:
    """Produce and ingest concurrently; end-to-end rate from first produce to last durable file."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with librdkafka threads
    with context.Manager() as manager, ProcessPoolExecutor(workers, mp_context=context) as pool:
        ready, produced = manager.Queue(), manager.Event()
        followers = [
            pool.submit(
                follow_share,
                bootstrap,
                str(lake),
                list(range(w, partitions, workers)),
                ready,
                produced,
            )
            for w in range(workers)
        ]
        for _ in range(workers):
            ready.get(timeout=120)
        sink = ReadingProducer(bootstrap, topic=PIPELINED, dlq_topic=DLQ)
        started = time.time()
        summary = replay_speeds(speeds, sink, source="synthetic", is_synthetic=True)
        produced.set()
        results = [f.result() for f in followers]
    stored = sum(n for n, _ in results)
    assert stored == summary.events, (stored, summary.events)
    seconds = max(t for _, t in results) - started
    return {
        "pipelined_seconds": round(seconds, 2),
        "pipelined_events_per_s": round(stored / seconds),
        "pipelined_lake_files": len(raw_files(lake)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--sensors", type=int, default=207)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=39092, help="the bench broker's port")
    parser.add_argument("--schema-registry", action="store_true", help="ids from a registry")
    args = parser.parse_args()

    state = LOCAL_STATE_DIR / "bench"
    broker = bench_broker(state / "kafka", args.port)
    registry = registry_service(state / "registry", port=args.port - 11)
    broker.stop()
    registry.stop()
    shutil.rmtree(state, ignore_errors=True)
    broker.start()
    os.environ["TRAFFIC_SCHEMA_REGISTRY_URL"] = ""  # the workers inherit the choice
    if args.schema_registry:
        registry.start()
        register_event_schemas(registry.url)
        os.environ["TRAFFIC_SCHEMA_REGISTRY_URL"] = registry.url
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        topics = [TopicSpec(EVENTS, args.partitions), TopicSpec(PIPELINED, args.partitions)]
        ensure_topics(admin, [*topics, TopicSpec(DLQ, 1)])
        speeds = simulate(args.days, args.sensors, seed=7).speeds_nan()

        lake = state / "lake"
        sequential = produce_then_ingest(
            broker.bootstrap_servers, speeds, lake, args.partitions, args.workers
        )
        figures = pipelined(
            broker.bootstrap_servers,
            speeds,
            state / "lake-pipelined",
            args.partitions,
            args.workers,
        )
        print(
            json.dumps(
                {
                    "bench": "ingest_throughput",
                    "synthetic": True,
                    "days": args.days,
                    "sensors": args.sensors,
                    "events": sequential["events"],
                    "partitions": args.partitions,
                    "ingest_workers": args.workers,
                    "schema_registry": args.schema_registry,
                    **sequential,
                    **figures,
                    "machine": machine(),
                }
            )
        )
    finally:
        broker.stop()
        registry.stop()


if __name__ == "__main__":
    main()
