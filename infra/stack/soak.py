"""`python -m infra.stack.soak --minutes 10`: the whole system for a bounded time, then a report.

Brings the demo stack up (Kafka, PostgreSQL, Dagster with its daemon and sensors, the API, the
dashboard) on a state folder and ports of its own, replays SYNTHETIC readings many times faster
than real time, and keeps the API under a steady load of valid requests once it is ready. When
the time is up the producer stops, ingestion gets a bounded while to catch up, and one JSON
report says: events in vs rows in the lake (plus ingestion's rejects, which must add up), DLQ
counts by stage, Dagster runs by status, API requests, errors and latency percentiles, peak
memory per service, whether any service process restarted or died, and the models: the seed
the API started with, every version the pipeline's retrain published during the soak (days
trained on, the retrain run's status, duration and training options) and the version the API
serves at the end.

Retraining runs while the stream goes on: `retrain_on_new_data` trains on complete days only
(days the stream has passed in every Kafka partition), so it needs the stream to have passed
two days: `minutes * speedup` of at least two simulated days and a bit. The soak trains the
candidates smaller than the daily default (`--train-max-rows`, `--train-splits`, passed to the
sensor as TRAFFIC_RETRAIN_MAX_ROWS / _N_SPLITS) and sets OMP_WAIT_POLICY=PASSIVE (unless set)
so a retrain fits in minutes on a shared machine; the report shows both. With
`--require-retrain` the soak keeps the load on after ingestion caught up until the API's
answers come from a retrained version (at most `--retrain-wait` seconds), and the run is
healthy only if they do. Without it a retrain is reported, not required: a short run may not
pass two days.

The report is printed and saved as `report.json` in the state folder.
Exit status 1 when the lake does not match, a valid request failed, a service restarted, a
retrain run failed, or (with `--require-retrain`) the API does not serve a retrained model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from confluent_kafka import Consumer, TopicPartition

from infra.stack.local import LocalStack
from infra.stack.process import descendants
from infra.stack.soak_models import models_report, served_version, wait_for_retrained_model
from sensors.retrain import TRAINING_ENV
from traffic_core.kafka.client_config import kafka_client_config
from traffic_core.kafka.topics import TRAFFIC_EVENTS, TRAFFIC_EVENTS_DLQ
from traffic_core.lake import raw_files
from traffic_core.registry import ModelRegistry
from traffic_core.settings import LOCAL_STATE_DIR, REPO_ROOT
from traffic_core.simulation import Simulator, incidents_path

SOAK_PORTS = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:26092",
    "KAFKA_CONTROLLER_PORT": "26093",
    "DAGSTER_PG_PORT": "26433",
    "DAGSTER_WEBSERVER_PORT": "26000",
    "TRAFFIC_API_PORT": "26080",
    "TRAFFIC_DASHBOARD_PORT": "26501",
}
"""Below Linux's ephemeral range and apart from the demo's and the tests' ports."""
SOAK_REGISTRY_URL = "http://127.0.0.1:26081"
"""Handed to the soak's processes only: the calling process keeps its own codecs' setting."""
SERVICES = ("kafka", "postgres", "registry", "dagster", "api", "dashboard")
OMP_PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}
"""Idle OpenMP threads sleep instead of spinning: with the soak's other services on the same
cores, one XGBoost fit took 76 s with spinning threads and 6 s without (load average 10)."""
SENSOR = "773869"
SIMULATION_START = pd.Timestamp("2012-03-01 00:00")


def say(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


# --- memory and restarts -----------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class ServiceWatch:
    """Peak memory of a service's whole process tree (run workers and code servers come and
    go below Dagster) and every root pid it was seen with."""

    pids: list[int | None] = field(default_factory=list)
    peak_tree_bytes: int = 0
    peak_process_bytes: int = 0
    down_samples: int = 0

    def sample(self, pid: int | None) -> None:
        if not self.pids or self.pids[-1] != pid:
            self.pids.append(pid)
        if pid is None:
            self.down_samples += 1
            return
        sizes = [rss_bytes(p) for p in (pid, *descendants(pid))]
        self.peak_tree_bytes = max(self.peak_tree_bytes, sum(sizes))
        self.peak_process_bytes = max(self.peak_process_bytes, max(sizes))

    def report(self) -> dict[str, Any]:
        return {
            "peak_tree_mb": round(self.peak_tree_bytes / 2**20, 1),
            "peak_process_mb": round(self.peak_process_bytes / 2**20, 1),
            "restarted": len(self.pids) > 1,
            "down_samples": self.down_samples,
        }


class Monitor(threading.Thread):
    def __init__(self, stack: LocalStack, every: float = 2.0) -> None:
        super().__init__(name="soak-monitor", daemon=True)
        self.stack = stack
        self.every = every
        self.watches = {name: ServiceWatch() for name in SERVICES}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            for name, watch in self.watches.items():
                watch.sample(service_pid(self.stack, name))


def service_pid(stack: LocalStack, name: str) -> int | None:
    """The root process of a service (PostgreSQL's postmaster writes its own pid file; the
    demo's Kafka is one node)."""
    if name == "kafka":
        return stack.kafka.nodes[0].process.pid()
    if name != "postgres":
        return getattr(stack, name).process.pid()
    try:
        pid = int((stack.postgres.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


# --- API load ----------------------------------------------------------------------------


class ApiLoad(threading.Thread):
    """Valid requests at a fixed rate: one sensor `rate` times a second, all sensors once a
    second. Every answer but 200 is an error: the load starts only once the API is ready."""

    def __init__(self, url: str, token: str, rate: float, sensors: list[str]) -> None:
        super().__init__(name="soak-load", daemon=True)
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.rate = rate
        self.sensors = sensors
        self.latencies: dict[str, list[float]] = {"one": [], "all": []}
        self.statuses: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.stopping = threading.Event()

    def run(self) -> None:
        interval = 1.0 / self.rate
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=10.0) as client:
            started = time.monotonic()
            for i in range(10**9):
                if self.stopping.is_set():
                    return
                delay = started + i * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                every_second = i % max(1, round(self.rate)) == 0
                kind, path = (
                    ("all", "/v1/forecasts")
                    if every_second
                    else ("one", f"/v1/forecasts/{self.sensors[i % len(self.sensors)]}")
                )
                t0 = time.perf_counter()
                try:
                    response = client.get(path)
                    status = str(response.status_code)
                except httpx.HTTPError as error:
                    response, status = None, type(error).__name__
                self.latencies[kind].append(time.perf_counter() - t0)
                self.statuses[status] += 1
                if kind == "one" and status == "200":
                    self.versions[response.json().get("model_version", "?")] += 1

    def report(self) -> dict[str, Any]:
        total = sum(self.statuses.values())
        errors = total - self.statuses["200"]
        return {
            "requests": total,
            "errors": errors,
            "error_rate": round(errors / total, 6) if total else None,
            "statuses": dict(self.statuses),
            **{
                f"{kind}_ms": {
                    f"p{q}": round(float(np.percentile(values, q)) * 1000, 2) for q in (50, 95, 99)
                }
                for kind, values in self.latencies.items()
                if values
            },
        }


# --- counting ----------------------------------------------------------------------------


def topic_messages(bootstrap: str, topic: str) -> int:
    consumer = Consumer(
        {**kafka_client_config(bootstrap, "traffic-admin"), "group.id": "soak-count"}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(
            high - low
            for low, high in (
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                for p in meta.partitions
            )
        )
    finally:
        consumer.close()


def dlq_by_stage(bootstrap: str, source_topic: str) -> Counter[str]:
    """Rejects by where they were caught: `ingest` records name the offset they came from."""
    consumer = Consumer(
        {
            **kafka_client_config(bootstrap, "traffic-admin"),
            "group.id": "soak-dlq-count",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    expected = topic_messages(bootstrap, TRAFFIC_EVENTS_DLQ)
    stages: Counter[str] = Counter()
    try:
        consumer.subscribe([TRAFFIC_EVENTS_DLQ])
        deadline = time.monotonic() + 60
        while sum(stages.values()) < expected and time.monotonic() < deadline:
            for message in consumer.consume(10_000, timeout=1.0):
                if message.error():
                    continue
                headers = dict(message.headers() or [])
                from_ingest = headers.get("dlq.source.topic") == source_topic.encode()
                stages["ingest" if from_ingest else "producer"] += 1
    finally:
        consumer.close()
    return stages


def lake_rows(lake: Path) -> int:
    return sum(pq.ParquetFile(path).metadata.num_rows for path in raw_files(lake))


# --- the run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SoakConfig:
    minutes: float
    speedup: float
    rate: float
    days: int
    catch_up_seconds: float
    state_dir: Path
    train_max_rows: int = 10_000
    train_splits: int = 3
    require_retrain: bool = False
    retrain_wait_seconds: float = 600.0


def soak_env(config: SoakConfig) -> dict[str, str]:
    """The stack's settings: the soak's own state folder and ports, unless already set."""
    env = {
        **SOAK_PORTS,
        **os.environ,
        "TRAFFIC_STATE_DIR": str(config.state_dir),
        "TRAFFIC_LAKE_DIR": str(config.state_dir / "lake"),
        "TRAFFIC_MODEL_DIR": str(config.state_dir / "models"),
        TRAINING_ENV["max_rows"]: str(config.train_max_rows),
        TRAINING_ENV["n_splits"]: str(config.train_splits),
    }
    registry = "TRAFFIC_SCHEMA_REGISTRY_URL"
    env[registry] = env.get(registry) or SOAK_REGISTRY_URL  # empty would mean no registry
    return {**OMP_PASSIVE, **env}


def wait_for_line(process: subprocess.Popen, text: str, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the stack stopped while starting:\n" + "".join(lines[-40:]))
        lines.append(line)
        if text in line:
            return lines
    raise TimeoutError(f"no {text!r} within {timeout:.0f} s:\n" + "".join(lines[-40:]))


def wait_ready(url: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if httpx.get(f"{url}/v1/ready", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"the API was not ready within {timeout:.0f} s")


def dagster_runs(url: str) -> dict[str, Any]:
    """Runs by status, and how long the finished ones took (launch to end)."""
    query = "{ runsOrError { ... on Runs { results { status startTime endTime } } } }"
    reply = httpx.post(f"{url}/graphql", json={"query": query}, timeout=30).json()
    runs = reply["data"]["runsOrError"]["results"]
    took = [r["endTime"] - r["startTime"] for r in runs if r["endTime"] and r["startTime"]]
    return {
        "by_status": dict(Counter(run["status"] for run in runs)),
        "finished_run_seconds": {
            "p50": round(float(np.median(took)), 1),
            "max": round(max(took), 1),
        }
        if took
        else None,
    }


def simulated_data(config: SoakConfig) -> Path:
    path = config.state_dir / "data" / f"simulated-{config.days}d-207s-seed0.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        say(f"simulating {config.days} days of SYNTHETIC readings for 207 sensors")
        Simulator(config.days, 207, seed=0, start=SIMULATION_START).write(path)
    return path


def fresh_state(stack: LocalStack, state_dir: Path) -> None:
    """Stop what an interrupted soak left running and start from empty topics, lake, models
    and Dagster instance; the simulated data and the broker jars are kept."""
    for name in reversed(SERVICES):
        getattr(stack, name).stop()
    state_dir.mkdir(parents=True, exist_ok=True)
    for entry in state_dir.iterdir():
        if entry.name != "data":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    libs = state_dir / "kafka" / "libs"
    libs.parent.mkdir(parents=True)
    libs.symlink_to(LOCAL_STATE_DIR / "kafka" / "libs")


def run(config: SoakConfig) -> dict[str, Any]:
    env = soak_env(config)
    os.environ.update({k: v for k, v in env.items() if k in SOAK_PORTS})
    stack = LocalStack.from_env(config.state_dir, env["TRAFFIC_SCHEMA_REGISTRY_URL"])
    fresh_state(stack, config.state_dir)
    data = simulated_data(config)
    say(f"starting the stack under {config.state_dir}")
    demo = subprocess.Popen(
        [sys.executable, "-m", "infra.stack", "demo", "--data", "none"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    monitor = Monitor(stack)
    producer: subprocess.Popen | None = None
    load: ApiLoad | None = None
    report: dict[str, Any] = {}
    try:
        wait_for_line(demo, "Press Ctrl-C", 600)  # by then the demo has written its tokens
        token = (stack.api.state_dir / "demo-planner.token").read_text().strip()
        threading.Thread(target=_drain, args=(demo,), daemon=True).start()
        monitor.start()
        started = time.monotonic()
        bootstrap = stack.kafka.bootstrap_servers
        simulated = pd.Timedelta(seconds=config.minutes * 60 * config.speedup)
        until = min(SIMULATION_START + simulated, SIMULATION_START + pd.Timedelta(days=config.days))
        producer = subprocess.Popen(
            [
                sys.executable, "-m", "traffic_core.ingestion.producer",
                "--bootstrap-servers", bootstrap,
                "--data", str(data),
                "--incidents", str(incidents_path(data)),
                "--speedup", str(config.speedup),
                "--until", until.isoformat(),
                "--no-progress",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=sys.stderr,  # stdout carries the report only
        )  # fmt: skip
        say(f"producing at {config.speedup:g}x real time; waiting for the API to be ready")
        ready_s = wait_ready(stack.api.url, 600)
        seed = served_version(stack.api.url)
        say(f"API ready after {ready_s:.0f} s serving {seed}; load at {config.rate:g}/s")
        load = ApiLoad(stack.api.url, token, config.rate, [SENSOR, "767541", "717447", "716328"])
        load.start()
        end = started + config.minutes * 60
        while time.monotonic() < end + 60 and producer.poll() is None:
            time.sleep(1)  # it stops by itself at `until`; a minute's grace for a slow start
        if producer.poll() is None:
            producer.terminate()
            producer.wait(60)
        produced_s = time.monotonic() - started
        events_in = topic_messages(bootstrap, TRAFFIC_EVENTS)
        say(f"{events_in:,} events in after {produced_s:.0f} s; waiting for ingestion")
        lake = config.state_dir / "lake"
        caught_up_from = time.monotonic()
        deadline = caught_up_from + config.catch_up_seconds
        while True:
            stages = dlq_by_stage(bootstrap, TRAFFIC_EVENTS)
            rows = lake_rows(lake)
            if rows + stages["ingest"] >= events_in or time.monotonic() > deadline:
                break
            time.sleep(10)
        catch_up_s = time.monotonic() - caught_up_from
        registry = ModelRegistry(config.state_dir / "models")
        retrained_s = None
        if config.require_retrain:
            say("waiting for the API's answers to come from a retrained model")
            retrained_s = wait_for_retrained_model(
                registry, load.versions, config.retrain_wait_seconds, say
            )
        load.stopping.set()
        load.join(30)
        monitor.stopping.set()
        monitor.join(30)
        report = {
            "soak": {
                "minutes": config.minutes,
                "speedup": config.speedup,
                "simulated_hours_per_minute": round(config.speedup / 60, 1),
                "simulated_until": until.isoformat(),
                "seconds_producing": round(produced_s, 1),
                "api_ready_after_s": round(ready_s, 1),
                "require_retrain": config.require_retrain,
                "retrained_model_served_after_catch_up_s": None
                if retrained_s is None
                else round(retrained_s, 1),
                "retrain_candidate_options": {
                    "max_rows": config.train_max_rows,
                    "n_splits": config.train_splits,
                },
                "omp_wait_policy": env.get("OMP_WAIT_POLICY"),
            },
            "events": {
                "in": events_in,
                "lake_rows": rows,
                "rejected_at_ingest": stages["ingest"],
                "rejected_by_producer": stages["producer"],
                "match": rows + stages["ingest"] == events_in,
                "lake_caught_up_after_s": round(catch_up_s, 1),
            },
            "dagster_runs": dagster_runs(stack.dagster.url),
            "models": models_report(
                registry, seed, stack.api.url, stack.dagster.url, load.versions
            ),
            "api": load.report(),
            "services": {name: watch.report() for name, watch in monitor.watches.items()},
            "machine": {"cpus": os.cpu_count(), "load_average_end": os.getloadavg()},
        }
    finally:
        if load is not None:
            load.stopping.set()
        monitor.stopping.set()
        if producer is not None and producer.poll() is None:
            producer.kill()
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(180)
        except subprocess.TimeoutExpired:
            demo.kill()
    return report


def _drain(process: subprocess.Popen) -> None:
    """Keep reading the stack's output so it never blocks on a full pipe."""
    assert process.stdout is not None
    for _ in process.stdout:
        pass


def healthy(report: dict[str, Any]) -> bool:
    models = report["models"]
    return (
        report["events"]["match"]
        and report["api"]["errors"] == 0
        and not any(s["restarted"] for s in report["services"].values())
        and not any(run["status"] == "FAILURE" for run in models["retrain_runs"])
        and (models["api_switched_to_retrained"] or not report["soak"]["require_retrain"])
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.stack.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="producing time")
    parser.add_argument(
        "--speedup", type=float, default=720.0, help="times real time (720: a day in 2 min)"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="API requests per second")
    parser.add_argument("--days", type=int, default=14, help="simulated days available")
    parser.add_argument(
        "--catch-up", type=float, default=600.0, help="seconds ingestion may take after"
    )
    parser.add_argument(
        "--state-dir", type=Path, default=LOCAL_STATE_DIR / "soak", help="wiped first"
    )
    parser.add_argument(
        "--train-max-rows", type=int, default=10_000, help="rows per candidate fit in a retrain"
    )
    parser.add_argument("--train-splits", type=int, default=3, help="CV folds in a retrain")
    parser.add_argument(
        "--require-retrain",
        action="store_true",
        help="healthy only if the API serves a retrained model (waits for it after catch-up)",
    )
    parser.add_argument(
        "--retrain-wait", type=float, default=600.0, help="seconds to wait for that model"
    )
    args = parser.parse_args(argv)
    config = SoakConfig(
        args.minutes,
        args.speedup,
        args.rate,
        args.days,
        args.catch_up,
        args.state_dir,
        args.train_max_rows,
        args.train_splits,
        args.require_retrain,
        args.retrain_wait,
    )
    report = run(config)
    print(json.dumps(report, indent=2))
    (config.state_dir / "report.json").write_text(json.dumps(report, indent=2))
    return 0 if report and healthy(report) else 1


if __name__ == "__main__":
    sys.exit(main())
