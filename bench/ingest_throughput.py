"""End-to-end ingestion throughput: simulated readings -> producer -> Kafka -> lake files.

Starts its own broker (ports 39092/39093, state under .local/bench), simulates N days of
SYNTHETIC readings for 207 sensors, replays them as fast as possible, then ingests every offset
range into a fresh lake with W worker processes (each its own consumer over a share of the
partitions, as the Dagster runs do). Then the `pipelined` figure: the same readings go to a second
topic while W follower processes ingest each new offset range as its watermark moves, timed from
the first produce to the last file durable. Prints one JSON line of figures.

`--security both` measures the cost of TLS on the same run: the produce-then-ingest figures on a
plaintext broker, then on a broker under TRAFFIC_SECURITY=tls (SASL_SSL, SCRAM, ACLs; port + 2),
each client acting as its platform principal (the pipelined figure is plaintext only).

    .venv/bin/python bench/ingest_throughput.py --days 28 --workers 2
    .venv/bin/python bench/ingest_throughput.py --days 7 --security both

With --schema-registry the producer and the workers take their wire ids from a registry service
of the bench's own (port 39081), as the stack runs them; without, they use the built-in ids.
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
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.stack.kafka import KafkaBroker
from infra.stack.web import registry_service
from traffic_core.events.registry_client import register_event_schemas
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds
from traffic_core.ingestion.ranges import RANGE_CONSUMER_CONFIG, ingest_ranges
from traffic_core.kafka.client_config import kafka_client_config
from traffic_core.kafka.topics import (
    TRAFFIC_EVENTS,
    TRAFFIC_EVENTS_DLQ,
    TopicSpec,
    ensure_topics,
)
from traffic_core.lake import OffsetRange, raw_files
from traffic_core.settings import LOCAL_STATE_DIR
from traffic_core.simulation import simulate

EVENTS, PIPELINED, DLQ = TRAFFIC_EVENTS, "bench-events-pipelined", TRAFFIC_EVENTS_DLQ
"""The platform's topic names, so the TLS broker's ACLs let the producer and lake writers in."""
INGEST_GROUP, FOLLOW_GROUP = "traffic-lake-bench-ingest", "traffic-lake-bench-follow"
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


def bench_broker(state_dir: Path, port: int, security_dir: Path | None = None) -> KafkaBroker:
    """A broker of a bench's own: its state folder, `port` and the controller on port + 1
    (under TLS with the CA, certificates and passwords in `security_dir`)."""
    return KafkaBroker(
        state_dir=state_dir,
        libs_dir=LOCAL_STATE_DIR / "kafka" / "libs",
        port=port,
        controller_port=port + 1,
        heap="1g",
        security_dir=security_dir,
    )


def lake_writer(bootstrap: str) -> dict[str, Any]:
    return kafka_client_config(bootstrap, "traffic-lake-writer")


def wait_for_group_coordinator(
    bootstrap: str, group: str, topic: str = EVENTS, timeout: float = 120.0
) -> None:
    """A fresh broker creates its offsets topic on the first group request and answers
    NOT_COORDINATOR while loading it: commit once for `group` before anything is timed."""
    ensure_topics(
        AdminClient(kafka_client_config(bootstrap, "traffic-admin")), [TopicSpec(topic, 1)]
    )
    consumer = Consumer({**lake_writer(bootstrap), "group.id": group})
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
                return
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    finally:
        consumer.close()


def ingest_share(bootstrap: str, lake: str, ranges: list[OffsetRange]) -> int:
    consumer = Consumer(
        {**lake_writer(bootstrap), "group.id": INGEST_GROUP, **RANGE_CONSUMER_CONFIG}
    )
    try:
        report = ingest_ranges(
            consumer,
            Producer(lake_writer(bootstrap)),
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
        {**lake_writer(bootstrap), "group.id": FOLLOW_GROUP, **RANGE_CONSUMER_CONFIG}
    )
    dlq = Producer(lake_writer(bootstrap))
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

    consumer = Consumer({**lake_writer(bootstrap), "group.id": INGEST_GROUP})
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


def use_security(security_dir: Path | None) -> None:
    """Point this process's Kafka clients, and the workers it starts, at a broker's security
    through the platform's one switch."""
    if security_dir is None:
        os.environ["TRAFFIC_SECURITY"] = "plaintext"
    else:
        os.environ.update(TRAFFIC_SECURITY="tls", TRAFFIC_SECURITY_DIR=str(security_dir))


def measure(
    state: Path, port: int, security_dir: Path | None, speeds: pd.DataFrame, args: Any
) -> dict[str, Any]:
    """Produce-then-ingest figures on a fresh broker of its own (and the pipelined figure on
    a plaintext one), with the load average when they started."""
    broker = bench_broker(state / "kafka", port, security_dir)
    broker.stop()
    shutil.rmtree(state, ignore_errors=True)
    use_security(security_dir)
    broker.start()
    try:
        admin = AdminClient(broker.client_config("traffic-admin"))
        topics = [TopicSpec(EVENTS, args.partitions), TopicSpec(DLQ, 1)]
        if security_dir is None:
            topics.append(TopicSpec(PIPELINED, args.partitions))
        ensure_topics(admin, topics)
        wait_for_group_coordinator(broker.bootstrap_servers, INGEST_GROUP)
        load = [round(x, 2) for x in os.getloadavg()]
        figures = produce_then_ingest(
            broker.bootstrap_servers, speeds, state / "lake", args.partitions, args.workers
        )
        if security_dir is None:
            figures |= pipelined(
                broker.bootstrap_servers,
                speeds,
                state / "lake-pipelined",
                args.partitions,
                args.workers,
            )
        return {"load_average_at_start": load, **figures}
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--sensors", type=int, default=207)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--security",
        choices=["plaintext", "tls", "both"],
        default="plaintext",
        help="broker and clients in plaintext, under TRAFFIC_SECURITY=tls, or both side by side",
    )
    parser.add_argument("--schema-registry", action="store_true", help="ids from a registry")
    args = parser.parse_args()

    state = LOCAL_STATE_DIR / "bench"
    registry = registry_service(state / "registry", port=39081)
    registry.stop()
    os.environ["TRAFFIC_SCHEMA_REGISTRY_URL"] = ""  # the workers inherit the choice
    speeds = simulate(args.days, args.sensors, seed=7).speeds_nan()
    results = {}
    try:
        if args.schema_registry:
            shutil.rmtree(state / "registry", ignore_errors=True)
            registry.start()
            register_event_schemas(registry.url)
            os.environ["TRAFFIC_SCHEMA_REGISTRY_URL"] = registry.url
        if args.security in ("plaintext", "both"):
            results["plaintext"] = measure(state / "plaintext", 39092, None, speeds, args)
        if args.security in ("tls", "both"):
            tls = state / "tls"
            results["tls"] = measure(tls, 39094, tls / "security", speeds, args)
    finally:
        registry.stop()
    summary: dict[str, Any] = {
        "bench": "ingest_throughput",
        "synthetic": True,
        "days": args.days,
        "sensors": args.sensors,
        "partitions": args.partitions,
        "ingest_workers": args.workers,
        "security": args.security,
        "schema_registry": args.schema_registry,
        **(results if args.security == "both" else next(iter(results.values()))),
        "machine": machine(),
    }
    if args.security == "both":
        summary["tls_cost"] = {
            key: round(1 - results["tls"][key] / results["plaintext"][key], 3)
            for key in ("produce_events_per_s", "ingest_events_per_s", "end_to_end_events_per_s")
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
