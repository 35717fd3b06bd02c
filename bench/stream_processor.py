"""Stream processor throughput and window-close latency on simulated readings.

Starts its own broker (ports 39392/39393, state under .local/bench-streams) and simulates N days
of SYNTHETIC readings for S sensors.

- throughput: every reading is produced first, then the processor (`python -m
  traffic_core.streams`, I instances) aggregates the backlog; events/s is measured on the
  group's committed offsets from the first commit to the last (start-up excluded, reported apart).
- latency: a fresh topic, the processor already running, readings sent in 5-minute steps at
  --latency-rate events/s. A window closes when its sensor's reading end + grace later arrives,
  so its latency runs from the send of that closing reading to the moment a read_committed
  consumer receives the aggregate (Kafka both ways, processing and the transaction commit).

Prints one JSON line of figures, with the load average the machine had.

    .venv/bin/python bench/stream_processor.py --days 28 --instances 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from bench.ingest_throughput import bench_broker, machine
from traffic_core.events import AGGREGATE, EventCodec
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds
from traffic_core.kafka.offsets import group_positions
from traffic_core.kafka.topics import TopicSpec, ensure_topics
from traffic_core.settings import LOCAL_STATE_DIR, REPO_ROOT
from traffic_core.simulation import simulate

GRACE_SECONDS = 300
STEP = pd.Timedelta("5min")


def make_topics(bootstrap: str, prefix: str) -> None:
    """{prefix}-events (12 partitions, as traffic-events), -aggregates (6) and -events-dlq."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    layout = [(f"{prefix}-events", 12), (f"{prefix}-aggregates", 6), (f"{prefix}-events-dlq", 1)]
    ensure_topics(admin, [TopicSpec(name, count) for name, count in layout])


def start_instances(
    bootstrap: str, state: Path, events: str, aggregates: str, count: int, commit: float
) -> list[subprocess.Popen[bytes]]:
    group = f"bench-{events}"
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "traffic_core.streams",
                *("--bootstrap-servers", bootstrap, "--events-topic", events),
                *("--aggregates-topic", aggregates, "--dlq-topic", f"{events}-dlq"),
                *("--group-id", group, "--instance-id", f"i{i}"),
                *("--state-dir", str(state / "state"), "--metrics-port", "0"),
                *("--grace-seconds", str(GRACE_SECONDS), "--commit-interval", str(commit)),
                "--no-sensor-catalogue",
                "--log-level",
                "WARNING",
            ],
            cwd=REPO_ROOT,
            stderr=(state / f"{events}-i{i}.log").open("ab"),
        )
        for i in range(count)
    ]


def stop_instances(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(60)


def committed(bootstrap: str, group: str, topic: str) -> tuple[int, int]:
    """(messages the group has committed, messages in the topic)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        positions = group_positions(consumer, topic)
    finally:
        consumer.close()
    return sum(max(done, 0) for done, _ in positions.values()), sum(
        high for _, high in positions.values()
    )


def throughput(
    bootstrap: str, state: Path, speeds: pd.DataFrame, instances: int, commit: float
) -> dict[str, float]:
    make_topics(bootstrap, "tp")
    summary = replay_speeds(
        speeds,
        ReadingProducer(bootstrap, "tp-events", "tp-events-dlq"),
        source="sim",
        is_synthetic=True,
    )
    started = time.perf_counter()
    processes = start_instances(bootstrap, state, "tp-events", "tp-aggregates", instances, commit)
    first: tuple[float, int] | None = None
    try:
        while True:
            done, total = committed(bootstrap, "bench-tp-events", "tp-events")
            now = time.perf_counter()
            if first is None and done > 0:
                first = (now, done)
            if done >= total:
                break
            if any(p.poll() is not None for p in processes):
                raise RuntimeError("a processor instance exited; see its log in " + str(state))
            time.sleep(0.25)
    finally:
        stop_instances(processes)
    assert first is not None
    return {
        "events": summary.events,
        "throughput_events_per_s": (total - first[1]) / (now - first[0]),
        "startup_s": first[0] - started,
        "wall_s_including_startup": now - started,
    }


class AggregateClock(threading.Thread):
    """Receive time of every committed aggregate, by (sensor, window start ms)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.received: dict[tuple[str, int], float] = {}
        self.stopping = threading.Event()
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"clock-{topic}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            }
        )
        self.consumer.subscribe([topic])
        self.codec = EventCodec(AGGREGATE)

    def run(self) -> None:
        while not self.stopping.is_set():
            for message in self.consumer.consume(1000, timeout=0.1):
                if message.error() is None:
                    now = time.perf_counter()
                    record = self.codec.decode(message.value())
                    start = int(record["window_start"].timestamp() * 1000)
                    self.received[(record["sensor_id"], start)] = now
        self.consumer.close()


def latency(
    bootstrap: str, state: Path, speeds: pd.DataFrame, rate: float, commit: float
) -> dict[str, float]:
    make_topics(bootstrap, "lt")
    processes = start_instances(bootstrap, state, "lt-events", "lt-aggregates", 1, commit)
    clock = AggregateClock(bootstrap, "lt-aggregates")
    clock.start()
    sent: dict[int, float] = {}
    try:
        warm = speeds.iloc[:12]  # an hour: the processor joins and restores before timing
        replay_speeds(
            warm, ReadingProducer(bootstrap, "lt-events"), source="sim", is_synthetic=True
        )
        deadline = time.monotonic() + 300
        while committed(bootstrap, "bench-lt-events", "lt-events")[0] < warm.size:
            if time.monotonic() > deadline:
                raise RuntimeError("the processor did not start within 300 s")
            time.sleep(0.5)
        producer = ReadingProducer(bootstrap, "lt-events", **{"linger.ms": 1})
        step_seconds = speeds.shape[1] / rate
        paced = speeds.iloc[12:]
        began = time.perf_counter()
        for i in range(len(paced)):
            replay_speeds(
                paced.iloc[i : i + 1], producer, source="sim", is_synthetic=True, progress=False
            )
            sent[int(paced.index[i].value // 1_000_000)] = time.perf_counter()
            pause = began + (i + 1) * step_seconds - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        time.sleep(commit * 3 + 5)
    finally:
        clock.stopping.set()
        clock.join(30)
        stop_instances(processes)
    closing_ms = (STEP + pd.Timedelta(seconds=GRACE_SECONDS)) // pd.Timedelta(milliseconds=1)
    latencies = [
        received - sent[start + closing_ms]
        for (_, start), received in clock.received.items()
        if start + closing_ms in sent
    ]
    expected = len(sent) * speeds.shape[1]  # each paced step closes its sensors' windows
    values = np.array(latencies) * 1000
    return {
        "latency_rate_events_per_s": rate,
        "latency_windows": len(latencies),
        "latency_windows_expected": expected,
        "close_to_aggregate_ms_p50": float(np.percentile(values, 50)),
        "close_to_aggregate_ms_p99": float(np.percentile(values, 99)),
        "close_to_aggregate_ms_max": float(values.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--sensors", type=int, default=207)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument("--latency-rate", type=float, default=1000.0, help="events/s")
    parser.add_argument("--latency-steps", type=int, default=60, help="5-minute steps timed")
    args = parser.parse_args()

    state = LOCAL_STATE_DIR / "bench-streams"
    broker = bench_broker(state / "kafka", 39392)
    broker.stop()
    shutil.rmtree(state, ignore_errors=True)
    broker.start()
    load_before = os.getloadavg()
    try:
        speeds = simulate(args.days, args.sensors, seed=7).speeds_nan()
        figures = throughput(
            broker.bootstrap_servers, state, speeds, args.instances, args.commit_interval
        )
        figures |= latency(
            broker.bootstrap_servers,
            state,
            speeds.iloc[: 12 + args.latency_steps],
            args.latency_rate,
            args.commit_interval,
        )
        print(
            json.dumps(
                {
                    "bench": "stream_processor",
                    "engine": "quixstreams",
                    "synthetic": True,
                    "days": args.days,
                    "sensors": args.sensors,
                    "instances": args.instances,
                    "commit_interval_s": args.commit_interval,
                    "grace_s": GRACE_SECONDS,
                    **figures,
                    "load_average_before": load_before,
                    "load_average_after": os.getloadavg(),
                    "machine": machine(),
                }
            )
        )
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
