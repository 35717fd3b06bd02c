"""Failover of the three-broker Kafka cluster under load, measured from the clients' side.

The six real METR-LA days (357,696 readings) are replayed at `--speedup` times real time into
`traffic-events` (12 partitions, replication 3, two in sync) of a cluster of its own, while two
lake writers (`python -m traffic_core.ingestion.group_worker`, one consumer group) store them and
the prediction API (`uvicorn serving.app:app`, a ridge model trained on 1-5 March) follows them.
`--kill-after` seconds into the replay the broker leading most `traffic-events` partitions is
SIGKILLed; it is restarted `--down` seconds later. Sampled every `--sample` seconds:

- producer (`acks=all`, idempotent): every acknowledgement's latency (librdkafka's, produce to
  ack), delivery errors, the longest gap between acknowledgements, the span of slow (> 1 s) ones;
- lake writers (flushing every second): the longest time no writer committed (their metric
  `traffic_ingest_last_commit_timestamp_seconds`), then whether the lake holds every reading once;
- API: `/v1/ready` (seconds not ready, by reason; at high speed-ups windows close faster than
  forecasts are made, so "forecasting the windows read from Kafka" comes and goes even without
  a kill) and one sensor's forecast (seconds not served, the longest time its window did not
  advance, and how far it trails the newest acknowledged reading, in event minutes).

Each figure is given before the kill (the baseline under this load) and after it. Own cluster
(ports 38092..38097), API on 38080, writers' metrics on 38086/38087; state under
.local/bench/failover, wiped at start. Prints one JSON object on stdout, progress on stderr.

    .venv/bin/python bench/kafka_failover.py                 # the whole six days, ~3 min
    .venv/bin/python bench/kafka_failover.py --speedup 8640 --kill-after 20 --down 15
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import KafkaError, Message
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from bench.api_latency import api_env, code_version, published_model
from bench.ingest_throughput import bench_broker, machine
from infra.stack.web import api_service
from serving.security import SecuritySettings, issue_token
from traffic_core.datasets import load_metr_la_graph, load_speed_csv
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds
from traffic_core.kafka.topics import (
    TRAFFIC_EVENTS,
    TRAFFIC_EVENTS_DLQ,
    TopicSpec,
    ensure_topics,
)
from traffic_core.lake import raw_files
from traffic_core.settings import LOCAL_STATE_DIR, REPO_ROOT, PlatformSettings

STATE = LOCAL_STATE_DIR / "bench" / "failover"
CLUSTER = dataclasses.replace(bench_broker(STATE / "kafka", 38092), heap="512m", brokers=3)
API_PORT, METRICS_PORTS = 38080, (38086, 38087)
SIX_DAYS = "metr-la/los_loop_speed_2012-03-01_to_03-06.csv"
TRAIN_UNTIL = pd.Timestamp("2012-03-05 23:55")
SENSOR = "773869"
GROUP = "traffic-lake-writers"
SLOW_ACK_S = 1.0


def say(message: str) -> None:
    print(f"[kafka_failover] {message}", file=sys.stderr, flush=True)


class Acks:
    """Every delivery report of the replay: wall time of the ack, its latency, event time."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.latencies: list[float] = []
        self.newest_event_ms = 0
        self.errors: dict[str, int] = {}

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.errors[error.name()] = self.errors.get(error.name(), 0) + 1
            return
        self.times.append(time.time())
        self.latencies.append(message.latency() or 0.0)
        self.newest_event_ms = max(self.newest_event_ms, message.timestamp()[1])


@dataclasses.dataclass
class Sample:
    at: float
    ready: int  # HTTP status of /v1/ready, 0 when the API did not answer
    reason: str  # why not ready ("" when ready)
    forecast: int  # HTTP status of one sensor's forecast, 0 when the API did not answer
    issued_for: pd.Timestamp | None
    newest_acked: pd.Timestamp | None
    last_commit: float  # newest commit of any writer (epoch s), 0 before the first


def metric(url: str, name: str) -> float:
    with contextlib.suppress(httpx.HTTPError):
        for family in text_string_to_metric_families(httpx.get(url, timeout=2).text):
            for sample in family.samples:
                if sample.name == name:
                    return sample.value
    return 0.0


def sample_forever(
    api_url: str, token: str, acks: Acks, samples: list[Sample], stop: threading.Event, every: float
) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    metrics = [f"http://127.0.0.1:{port}/metrics" for port in METRICS_PORTS]
    with httpx.Client(timeout=2) as http:
        while not stop.wait(every):
            ready, reason, forecast, issued = 0, "no answer", 0, None
            with contextlib.suppress(httpx.HTTPError):
                readiness = http.get(f"{api_url}/v1/ready")
                ready, reason = readiness.status_code, readiness.json().get("reason", "")
                answer = http.get(f"{api_url}/v1/forecasts/{SENSOR}", headers=auth)
                forecast = answer.status_code
                if forecast == 200:
                    issued = pd.Timestamp(answer.json()["issued_for"])
            newest = acks.newest_event_ms
            samples.append(
                Sample(
                    at=time.time(),
                    ready=ready,
                    reason=reason,
                    forecast=forecast,
                    issued_for=issued,
                    newest_acked=pd.Timestamp(newest, unit="ms", tz="UTC") if newest else None,
                    last_commit=max(
                        metric(url, "traffic_ingest_last_commit_timestamp_seconds")
                        for url in metrics
                    ),
                )
            )


def longest_gap(times: list[float] | np.ndarray) -> float:
    return float(np.diff(times).max()) if len(times) > 1 else 0.0


def producer_figures(acks: Acks, since: float, until: float) -> dict[str, Any]:
    times, latencies = np.asarray(acks.times), np.asarray(acks.latencies)
    inside = (times >= since) & (times < until)
    slow = inside & (latencies > SLOW_ACK_S)
    produced_at = times - latencies
    return {
        "acks": int(inside.sum()),
        "ack_latency_p50_s": round(float(np.percentile(latencies[inside], 50)), 4),
        "ack_latency_p99_s": round(float(np.percentile(latencies[inside], 99)), 4),
        "ack_latency_max_s": round(float(latencies[inside].max()), 3),
        "longest_gap_between_acks_s": round(longest_gap(times[inside]), 3),
        f"acks_slower_than_{SLOW_ACK_S:g}s": int(slow.sum()),
        "slow_span_s": round(float(times[slow].max() - produced_at[slow].min()), 3)
        if slow.any()
        else 0.0,
        "last_slow_ack_s_after_start": round(float(times[slow].max() - since), 1)
        if slow.any()
        else None,
    }


def spells(samples: list[Sample], bad: Any) -> tuple[float, float]:
    """Total and longest time the samples satisfy `bad` (each sample stands for the interval
    up to the next one)."""
    total = longest = run = 0.0
    for here, after in itertools.pairwise(samples):
        if bad(here):
            run += after.at - here.at
            total += after.at - here.at
            longest = max(longest, run)
        else:
            run = 0.0
    return round(total, 2), round(longest, 2)


def service_figures(samples: list[Sample]) -> dict[str, Any]:
    """The API's and the writers' view over one stretch of samples."""
    not_ready, longest_not_ready = spells(samples, lambda s: s.ready != 200)
    unserved, longest_unserved = spells(samples, lambda s: s.forecast != 200)
    reasons = {
        reason: spells(samples, lambda s, r=reason: s.reason == r)[0]
        for reason in sorted({s.reason for s in samples if s.reason})
    }
    stalls, stalled_since = [], None
    for sample in samples:  # how long the forecast's window stood still, at each sample
        if stalled_since is None or sample.issued_for != stalled_since[1]:
            stalled_since = (sample.at, sample.issued_for)
        stalls.append(sample.at - stalled_since[0])
    trailing = [
        (s.newest_acked - s.issued_for).total_seconds() / 60
        for s in samples
        if s.issued_for is not None and s.newest_acked is not None
    ]
    commits = [s.at - s.last_commit for s in samples if s.last_commit]
    return {
        "seconds": round(samples[-1].at - samples[0].at, 1) if samples else 0,
        "api_not_ready_s": not_ready,
        "api_longest_not_ready_s": longest_not_ready,
        "api_not_ready_s_by_reason": reasons,
        "api_forecast_not_served_s": unserved,
        "api_forecast_longest_not_served_s": longest_unserved,
        "api_forecast_longest_unchanged_s": round(max(stalls, default=0.0), 2),
        "api_forecast_trails_acked_readings_max_event_min": round(max(trailing, default=0), 1),
        "writers_longest_without_commit_s": round(max(commits, default=0.0), 2),
    }


def lake_check(expected: int) -> dict[str, Any]:
    files = raw_files(STATE / "lake")
    columns = ["sensor_id", "event_time", "kafka_partition", "kafka_offset"]
    table = pa.concat_tables(pq.read_table(f, columns=columns) for f in files).to_pandas()
    return {
        "files": len(files),
        "rows": len(table),
        "expected": expected,
        "duplicate_offsets": int(table.duplicated(["kafka_partition", "kafka_offset"]).sum()),
        "duplicate_readings": int(table.duplicated(["sensor_id", "event_time"]).sum()),
        "complete": len(table) == expected
        and not table.duplicated(["sensor_id", "event_time"]).any(),
    }


def start_writers() -> list[subprocess.Popen]:
    (STATE / "writers").mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "traffic_core.ingestion.group_worker"),
                *("--bootstrap-servers", CLUSTER.bootstrap_servers, "--group-id", GROUP),
                *("--worker-id", f"w{i}", "--metrics-port", str(port)),
                *("--lake-dir", str(STATE / "lake"), "--session-timeout-ms", "10000"),
                *("--flush-seconds", "1", "--flush-messages", "5000"),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(STATE / "writers" / f"w{i}.log").open("wb"),
        )
        for i, port in enumerate(METRICS_PORTS, start=1)
    ]


def wait_for_lake(expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = raw_files(STATE / "lake")
        if sum(pq.ParquetFile(f).metadata.num_rows for f in files) >= expected:
            return
        time.sleep(2)
    say(f"the lake did not reach {expected} readings within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speedup", type=float, default=2880.0, help="x real time")
    parser.add_argument("--kill-after", type=float, default=60.0, help="seconds into the replay")
    parser.add_argument("--down", type=float, default=30.0, help="seconds the broker stays dead")
    parser.add_argument("--sample", type=float, default=0.25, help="seconds between samples")
    args = parser.parse_args()
    # The codecs' built-in schema ids: the bench runs no schema registry.
    os.environ["TRAFFIC_SCHEMA_REGISTRY_URL"] = ""
    load_at_start = os.getloadavg()
    data_dir = PlatformSettings().data_dir
    speeds = load_speed_csv(data_dir / SIX_DAYS)
    registry, version = published_model(
        "ridge",
        speeds.loc[:TRAIN_UNTIL],
        lambda: load_metr_la_graph(data_dir / "metr-la"),
        retrain=False,
        state=LOCAL_STATE_DIR / "bench" / "failover-models",
    )
    api = api_service(STATE / "api", port=API_PORT)
    for leftover in (api, CLUSTER):
        leftover.stop()
    shutil.rmtree(STATE, ignore_errors=True)

    writers: list[subprocess.Popen] = []
    try:
        say(f"starting three brokers on {CLUSTER.bootstrap_servers}")
        CLUSTER.start(timeout=180)
        topics = [TopicSpec(TRAFFIC_EVENTS, 12), TopicSpec(TRAFFIC_EVENTS_DLQ, 3)]
        topics += [TopicSpec(f"{TRAFFIC_EVENTS}-{kind}", 2) for kind in ("predictions", "alerts")]
        admin = AdminClient({"bootstrap.servers": CLUSTER.bootstrap_servers})
        ensure_topics(admin, topics, CLUSTER.replication)
        writers = start_writers()
        jwt_secret = secrets.token_urlsafe(48)
        env = api_env(registry, CLUSTER, jwt_secret, state=STATE, events=TRAFFIC_EVENTS)
        api.start({**env, "KAFKA_BROKERS": "3"}, timeout=180)
        token = issue_token("bench", ["planner"], SecuritySettings(jwt_secret=jwt_secret), 3600)

        acks, samples, stop = Acks(), [], threading.Event()
        sampler = threading.Thread(
            target=sample_forever, args=(api.url, token, acks, samples, stop, args.sample)
        )
        sink = ReadingProducer(
            CLUSTER.bootstrap_servers, on_delivery=acks, **{"delivery.report.only.error": False}
        )
        outcome: dict[str, Any] = {}
        replay = threading.Thread(
            target=lambda: outcome.update(
                summary=replay_speeds(
                    speeds, sink, source="metr-la", is_synthetic=False, speedup=args.speedup
                )
            )
        )
        say(f"replaying {speeds.size} readings at {args.speedup:g}x real time")
        started = time.time()
        sampler.start()
        replay.start()
        time.sleep(args.kill_after)
        leader = CLUSTER.leader_of_most(TRAFFIC_EVENTS)
        killed_at = time.time()
        CLUSTER.kill(leader)
        say(f"SIGKILLed broker {leader} at {killed_at - started:.1f} s")
        time.sleep(args.down)
        restarted_at = time.time()
        CLUSTER.start(timeout=180)
        rejoined_at = time.time()
        say(f"broker {leader} restarted, answering after {rejoined_at - restarted_at:.1f} s")
        replay.join()
        replayed_at = time.time()
        summary = outcome["summary"]
        say(f"replay done in {summary.seconds:.0f} s; waiting for the lake")
        wait_for_lake(summary.events, timeout=300)
        time.sleep(2 * args.sample)
        stop.set()
        sampler.join()
        for writer in writers:
            writer.terminate()
        for writer in writers:
            writer.wait(60)
        lake = lake_check(summary.events)
        leaders_after = CLUSTER.leader_of_most(TRAFFIC_EVENTS)
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
        api.stop()
        CLUSTER.stop()

    first_ready = next((s.at for s in samples if s.ready == 200), killed_at)
    before = [s for s in samples if first_ready <= s.at < killed_at]
    after = [s for s in samples if killed_at <= s.at <= replayed_at]
    print(
        json.dumps(
            {
                "bench": "kafka_failover",
                "machine": machine() | {"load_at_start": load_at_start},
                "load_at_end": os.getloadavg(),
                "code": code_version(),
                "cluster": {
                    "brokers": CLUSTER.brokers,
                    "replication_factor": CLUSTER.replication.factor,
                    "min_insync_replicas": CLUSTER.replication.min_insync,
                    "partitions": 12,
                },
                "replay": {
                    "readings": summary.events,
                    "speedup": args.speedup,
                    "seconds": round(summary.seconds, 1),
                    "delivery_failures": summary.delivery_failures,
                    "delivery_errors": acks.errors,
                },
                "timeline_s": {
                    "api_first_ready": round(first_ready - started, 1),
                    "killed": round(killed_at - started, 1),
                    "killed_broker": leader,
                    "restarted": round(restarted_at - started, 1),
                    "restarted_broker_answering": round(rejoined_at - started, 1),
                    "replay_done": round(replayed_at - started, 1),
                    "broker_leading_most_partitions_at_end": leaders_after,
                },
                "producer": {
                    "before_kill": producer_figures(acks, first_ready, killed_at),
                    "after_kill": producer_figures(acks, killed_at, replayed_at),
                },
                "services": {
                    "before_kill": service_figures(before),
                    "after_kill": service_figures(after),
                },
                "lake": lake,
                "api_model": version,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
