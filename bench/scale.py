"""Scale simulation: how ingestion, Spark aggregation and the prediction API grow from 207 to
2,000 to 10,000 SYNTHETIC sensors.

For each sensor count N the simulator builds the `synthetic-<N>` network (the graph the API
loads with TRAFFIC_API_DATASET=synthetic-<N>) and its speeds from 1 March 2012 (seeded), then:

- ingest: the readings of the first hours/days (about `--events` of them) replayed into a
  12-partition topic as fast as possible, then stored by 2 ingest worker processes
  (bench/ingest_throughput.py's `produce_then_ingest`); end-to-end events/s and the seconds one
  simulated day of N sensors takes;
- aggregation: the first simulated day as raw lake files, aggregated to 5-minute windows by
  Spark local[2], cold and warm (bench/aggregate_spark.py's `run`);
- api: a ridge model trained on the first two simulated days and published (cached under
  .local/bench-scale/models); in this process, model load and the window-close compute
  (features + ONNX + encoding of all N forecasts); then the API as deployed
  (bench/api_latency.py's set-up) over the third day from 06:00: time to ready, all-sensor
  GET at a modest rate, one-sensor GET at a high rate (vegeta, open loop), event -> WebSocket
  push, and the API's peak RSS.

Own broker (ports 27092/27093) and API (27080); state under .local/bench-scale, which no other
bench wipes. Prints one JSON object on stdout, progress on stderr.

    .venv/bin/python bench/scale.py                  # 207,2000,10000
    .venv/bin/python bench/scale.py --quick          # 207,2000 with less load: a fast check
    .venv/bin/python bench/scale.py --sensors 2000 --phases api
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from confluent_kafka.admin import AdminClient

from bench import aggregate_spark, api_latency, ingest_throughput
from infra.stack.web import WebService, api_service
from serving.forecasting import forecast_all
from serving.security import SecuritySettings, issue_token
from traffic_core.features import FEATURE_NAMES, LOOKBACK, make_features
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds
from traffic_core.ingestion.raw_import import write_speeds_as_raw
from traffic_core.kafka.topics import TopicSpec, ensure_topics
from traffic_core.model_bundle import ModelBundle
from traffic_core.networks import load_network_graph
from traffic_core.registry import ModelRegistry
from traffic_core.settings import LOCAL_STATE_DIR
from traffic_core.simulation import STEPS_PER_DAY, simulate
from traffic_core.windows import WINDOW

STATE = LOCAL_STATE_DIR / "bench-scale"
VEGETA = STATE / "bin" / "vegeta"
BROKER = ingest_throughput.bench_broker(STATE / "kafka", 27092)
API_PORT = 27080
PHASES = ("ingest", "aggregate", "api")
SEED = 7
PARTITIONS, INGEST_WORKERS = 12, 2
SPARK_MASTER = "local[2]"
TRAIN_DAYS = 2
"""Training profiles leave each row's own day out, so a model needs two days at least."""
LIVE_FROM = pd.Timedelta(days=TRAIN_DAYS, hours=6)
"""Offset from the simulation's start: the API serves the day after the training days."""
WARM = pd.Timedelta(hours=2)
"""Readings replayed before the API starts, so its live state has the hour features need."""
START_TIMEOUT = 1200.0
"""Seconds for the API to load its model: the feature context is dense in N (minutes at 10k)."""


def say(message: str) -> None:
    print(f"[scale] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Effort:
    """How much each measurement does; `--quick` shrinks it."""

    ingest_events: int = 600_000
    one_rate: int = 500
    all_rate: int = 20
    http_seconds: float = 10.0
    warmup_seconds: float = 2.0
    push_windows: int = 10
    push_pause: float = 0.5
    push_wait: float = 60.0


QUICK = Effort(ingest_events=150_000, http_seconds=4.0, warmup_seconds=1.0, push_windows=4)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(what: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = what()
    return result, time.perf_counter() - started


# --- phases --------------------------------------------------------------------------------


def ingest(bootstrap: str, speeds: pd.DataFrame) -> dict[str, Any]:
    """End to end (produce, then ingest) over `speeds`, and what a simulated day costs."""
    n = speeds.shape[1]
    topic = f"scale-ingest-{n}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    ensure_topics(admin, [TopicSpec(topic, PARTITIONS), TopicSpec(ingest_throughput.DLQ, 1)])
    lake = STATE / "lakes" / f"ingest-{n}"
    shutil.rmtree(lake, ignore_errors=True)
    load = load_average()
    figures = ingest_throughput.produce_then_ingest(
        bootstrap, speeds, lake, PARTITIONS, INGEST_WORKERS, topic
    )
    shutil.rmtree(lake, ignore_errors=True)
    rate = figures["end_to_end_events_per_s"]
    return {
        "simulated_hours": round(len(speeds) / 12, 1),
        "partitions": PARTITIONS,
        "ingest_workers": INGEST_WORKERS,
        **figures,
        "seconds_per_simulated_day": round(n * STEPS_PER_DAY / rate, 1),
        "load_average_at_start": load,
    }


def aggregate(day: pd.DataFrame) -> dict[str, Any]:
    """Spark's 5-minute aggregation of one simulated day of raw lake files."""
    lake = STATE / "lakes" / f"spark-{day.shape[1]}"
    shutil.rmtree(lake, ignore_errors=True)
    days = write_speeds_as_raw(lake, day, source="synthetic", is_synthetic=True, topic="scale")
    load = load_average()
    figures = aggregate_spark.run(SPARK_MASTER, lake, days)
    shutil.rmtree(lake, ignore_errors=True)
    return {
        "raw_readings": int(day.size),
        **{k: v for k, v in figures.items() if not k.startswith("all_days")},
        "load_average_at_start": load,
    }


def window_close_compute(root: Path, version: str, speeds: pd.DataFrame) -> dict[str, Any]:
    """What the API does when a window closes, timed here for each push window: features
    for all sensors, the ONNX models, and the snapshot with its encoded bodies."""
    bundle, load_seconds = timed(lambda: ModelBundle.load(ModelRegistry(root), version))
    features_ms, onnx_ms, total_ms, body = [], [], [], b""
    for at in speeds.index[-min(len(speeds) - LOOKBACK, 10) :]:
        hour = speeds.loc[at - (LOOKBACK - 1) * WINDOW : at]
        t0 = time.perf_counter()
        inputs = make_features(hour, bundle.context, at=at)[list(FEATURE_NAMES)].to_numpy()
        t1 = time.perf_counter()
        bundle.predict(inputs)
        t2 = time.perf_counter()
        body = forecast_all(bundle, hour, at, True).batch_json(None)
        t3 = time.perf_counter()
        features_ms.append((t1 - t0) * 1000)
        onnx_ms.append((t2 - t1) * 1000)
        total_ms.append((t3 - t2) * 1000)
    total = api_latency.percentiles(total_ms)
    return {
        "model_load_seconds": round(load_seconds, 2),
        "windows": len(total_ms),
        "total_ms": total,
        "features_ms_p50": api_latency.percentiles(features_ms)["p50"],
        "onnx_ms_p50": api_latency.percentiles(onnx_ms)["p50"],
        "all_sensors_body_bytes": len(body),
    }


def peak_rss_mb(api: WebService) -> dict[str, float | None]:
    """The API process's peak and current resident memory (VmHWM, VmRSS)."""
    pid = api.process.pid()
    if pid is None:
        return {"peak_rss_mb": None, "rss_mb": None}
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    kb = {k: int(status[k].split()[0]) for k in ("VmHWM", "VmRSS")}
    return {"peak_rss_mb": round(kb["VmHWM"] / 1024), "rss_mb": round(kb["VmRSS"] / 1024)}


def serve(bootstrap: str, speeds: pd.DataFrame, effort: Effort, vegeta: Path) -> dict[str, Any]:
    """Train (or reuse) the N-sensor model, time the window-close compute here, then run and
    load the API on the `synthetic-<N>` network."""
    n = speeds.shape[1]
    network = f"synthetic-{n}"
    train = speeds.iloc[: TRAIN_DAYS * STEPS_PER_DAY]
    cached = ModelRegistry(api_latency.model_root("ridge", train, STATE)).latest() is not None
    (root, version), train_seconds = timed(
        lambda: api_latency.published_model(
            "ridge", train, lambda: load_network_graph(network), retrain=False, state=STATE
        )
    )
    live_from = speeds.index[0] + LIVE_FROM
    push_from = live_from + WARM
    windows = speeds.loc[push_from:].iloc[: effort.push_windows]
    say(f"{network}: window-close compute in this process")
    compute = window_close_compute(root, version, speeds.loc[:push_from])
    gc.collect()

    events = f"scale-api-{n}"
    ensure_topics(AdminClient({"bootstrap.servers": bootstrap}), api_latency.api_topics(events))
    sink = ReadingProducer(bootstrap, topic=events, dlq_topic=api_latency.DLQ)
    warm = speeds.loc[live_from : push_from - WINDOW]
    replayed = replay_speeds(warm, sink, source="synthetic", is_synthetic=True)
    if replayed.delivery_failures:
        raise SystemExit(f"{replayed.delivery_failures} readings not delivered")

    api = api_service(STATE / "api", port=API_PORT, extra_args=api_latency.server_options())
    api.stop()  # left by a run killed mid-way
    shutil.rmtree(STATE / "api", ignore_errors=True)
    secret = secrets.token_urlsafe(48)
    env = api_latency.api_env(root, BROKER, secret, STATE, dataset=network, events=events)
    with api_latency.stopped_on_exit(api) as remember:
        say(f"{network}: starting the API on {api.url}")
        started = time.perf_counter()
        api.start(env, timeout=START_TIMEOUT)
        remember()
        api_latency.wait_ready(api, START_TIMEOUT)
        ready_seconds = time.perf_counter() - started
        token = issue_token("bench", ["planner"], SecuritySettings(jwt_secret=secret), ttl=7200)
        headers = {"Authorization": f"Bearer {token}"}
        sensors = [str(s) for s in speeds.columns]
        one_urls = [f"{api.url}/v1/forecasts/{s}" for s in sensors]
        all_urls = [f"{api.url}/v1/forecasts"]
        sizes = {
            name: len(httpx.get(urls[0], headers=headers, timeout=60).content)
            for name, urls in (("one", one_urls), ("all", all_urls))
        }
        phases = {}
        for name, route, urls, rate, target in (
            ("one_sensor", api_latency.ONE_ROUTE, one_urls, effort.one_rate, "one_sensor_p99"),
            ("all_sensors", api_latency.ALL_ROUTE, all_urls, effort.all_rate, "all_sensors_p99"),
        ):
            phases[name] = api_latency.http_phase(
                vegeta,
                api,
                route,
                urls,
                token,
                rate,
                effort.http_seconds,
                effort.warmup_seconds,
                api_latency.TARGET_MS[target],
                out=STATE,
                max_body=0,  # an all-sensor body is MBs at 10k: vegeta keeps none
            )
        phases["one_sensor"]["response_bytes"] = sizes["one"]
        phases["all_sensors"]["response_bytes"] = sizes["all"]
        say(f"{network}: push, {len(windows)} windows")
        push = asyncio.run(
            api_latency.push_latency(
                api, token, sink, windows, effort.push_pause, "synthetic", effort.push_wait
            )
        )
        memory = peak_rss_mb(api)
        del sink
        gc.collect()
    return {
        "network": network,
        "model": {"family": "ridge", **api_latency.MODEL_PARAMS["ridge"], "version": version},
        "train_seconds": None if cached else round(train_seconds, 1),
        "window_close": compute,
        "api_ready_seconds": round(ready_seconds, 1),
        "one_sensor": phases["one_sensor"],
        "all_sensors": phases["all_sensors"],
        "push": push,
        **memory,
    }


# --- running -------------------------------------------------------------------------------


def simulated(n: int, steps: int) -> pd.DataFrame:
    """The first `steps` 5-minute steps of the `synthetic-<n>` network's speeds. Whole days
    are simulated, and the same days whatever the steps asked, so cached models stay valid."""
    days = math.ceil(steps / STEPS_PER_DAY)
    graph = load_network_graph(f"synthetic-{n}")
    return simulate(days, graph=graph, seed=SEED).speeds_nan().iloc[:steps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sensors", default=None, help="comma-separated (default 207,2000,10000)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"of {','.join(PHASES)}")
    parser.add_argument("--quick", action="store_true", help="207,2000 with less load")
    parser.add_argument("--events", type=int, help="readings per ingest sample")
    args = parser.parse_args()
    effort = QUICK if args.quick else Effort()
    if args.events:
        effort = replace(effort, ingest_events=args.events)
    counts = [
        int(x)
        for x in (args.sensors or ("207,2000" if args.quick else "207,2000,10000")).split(",")
    ]
    phases = [p for p in args.phases.split(",") if p]
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases {sorted(unknown)}")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    load_at_start, started = load_average(), time.perf_counter()
    vegeta = api_latency.ensure_vegeta(VEGETA) if "api" in phases else VEGETA

    say(f"simulating {counts} sensors")
    speeds = {n: simulated(n, (TRAIN_DAYS + 1) * STEPS_PER_DAY) for n in counts}
    results: dict[int, dict[str, Any]] = {n: {"sensors": n} for n in counts}
    needs_broker = bool({"ingest", "api"} & set(phases))  # aggregation alone leaves it be
    with api_latency.stopped_on_exit(*[BROKER][:needs_broker]) as remember:
        if needs_broker:
            BROKER.stop()
            shutil.rmtree(BROKER.state_dir, ignore_errors=True)
            say("starting the broker")
            BROKER.start()
            remember()
            ingest_throughput.wait_for_group_coordinator(
                BROKER.bootstrap_servers, ingest_throughput.INGEST_GROUP
            )
        # phase by phase: ingest workers are forked, before any Spark JVM exists
        for n in counts if "ingest" in phases else []:
            steps = math.ceil(effort.ingest_events / n)
            say(f"ingest: {n} sensors, {steps} steps")
            results[n]["ingest"] = ingest(BROKER.bootstrap_servers, simulated(n, steps))
            say(json.dumps(results[n]["ingest"]))
        for n in counts if "aggregate" in phases else []:
            say(f"aggregate: {n} sensors, one day")
            results[n]["aggregation"] = aggregate(speeds[n].iloc[:STEPS_PER_DAY])
            say(json.dumps(results[n]["aggregation"]))
        for n in counts if "api" in phases else []:
            say(f"api: {n} sensors")
            results[n]["api"] = serve(BROKER.bootstrap_servers, speeds[n], effort, vegeta)
            say(json.dumps(results[n]["api"]))
    print(
        json.dumps(
            {
                "bench": "scale",
                "synthetic": True,
                "quick": args.quick,
                "effort": asdict(effort),
                "spark_master": SPARK_MASTER,
                "results": list(results.values()),
                "code": api_latency.code_version(),
                "run_seconds": round(time.perf_counter() - started),
                "machine": {
                    **ingest_throughput.machine(),
                    "load_average_at_start": load_at_start,
                    "load_average_at_end": load_average(),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
