"""Latency of the prediction API as deployed: uvicorn (one worker, or --workers N) over a real
broker and model.

Starts its own broker (ports 39192/39193, state under .local/bench/api), trains a model on
1-5 March 2012 (cached under .local/bench/api/models by family, parameters and data: training
XGBoost takes minutes on 2 cores), replays 6 March 06:00-07:55 so the live state has the hour
the features need, and starts `uvicorn serving.app:app`. Then three figures:

- one sensor, `GET /v1/forecasts/{id}` (ids in turn), at a fixed rate (default 1,000/s);
- all sensors, `GET /v1/forecasts` (207), at a fixed rate (default 100/s);
- push: the time from producing the 207 readings that close a 5-minute window to receiving
  its `{"type": "forecasts"}` message on `/v1/stream/ws`, one window at a time.

HTTP load comes from vegeta (installed into .local/bench/bin with the Go toolchain when
missing): open loop, so a slow answer delays no later request and queueing shows in the
percentiles. Any answer other than 200 counts as an error. Prints one JSON object on stdout,
progress on stderr.

`--security both` measures the cost of TLS on the same run: the three figures against a
plaintext broker and HTTP API, then under TRAFFIC_SECURITY=tls (a broker of its own on port
39196 with SASL_SSL, SCRAM users and ACLs; the API over HTTPS; every client verifying the
stack's CA), and the differences.

    .venv/bin/python bench/api_latency.py
    .venv/bin/python bench/api_latency.py --model ridge --security both --seconds 10 --windows 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import importlib.util
import json
import os
import resource
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from bench.ingest_throughput import machine, use_security
from infra.stack.__main__ import create_topics
from infra.stack.certs import CertificateAuthority
from infra.stack.kafka import KafkaBroker
from infra.stack.process import descendants
from infra.stack.web import WebService, api_service
from serving.security import SecuritySettings, issue_token
from traffic_core import features
from traffic_core.datasets import SensorGraph, load_metr_la_graph, load_speed_csv
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds
from traffic_core.kafka.topics import TRAFFIC_EVENTS, TRAFFIC_EVENTS_DLQ, TopicSpec, ensure_topics
from traffic_core.models.quick import train_and_publish
from traffic_core.registry import ModelRegistry, frame_fingerprint, git_commit
from traffic_core.settings import LOCAL_STATE_DIR, REPO_ROOT, PlatformSettings

STATE = LOCAL_STATE_DIR / "bench" / "api"
VEGETA = LOCAL_STATE_DIR / "bench" / "bin" / "vegeta"
VEGETA_MODULE = "github.com/tsenart/vegeta/v12@v12.13.0"
SIX_DAYS = "metr-la/los_loop_speed_2012-03-01_to_03-06.csv"
TRAIN_UNTIL = pd.Timestamp("2012-03-05 23:55")
LIVE_FROM = pd.Timestamp("2012-03-06 06:00")
PUSH_FROM = LIVE_FROM + pd.Timedelta("2h")
"""Two hours of readings warm the live state; each push window after that is timed."""
EVENTS, DLQ = TRAFFIC_EVENTS, TRAFFIC_EVENTS_DLQ
"""The platform's input topic names, so the TLS broker's ACLs let the producer write them."""
BROKER = KafkaBroker(
    state_dir=STATE / "kafka",
    libs_dir=LOCAL_STATE_DIR / "kafka" / "libs",
    port=39192,
    controller_port=39193,
)
TLS_BROKER = KafkaBroker(
    state_dir=STATE / "tls" / "kafka",
    libs_dir=LOCAL_STATE_DIR / "kafka" / "libs",
    security_dir=STATE / "tls" / "security",
)
"""Its ports: the plaintext broker's + 4 (39196, 39197 by default)."""
MODEL_PARAMS = {
    "xgboost": {"max_depth": 6, "n_estimators": 200},
    "ridge": {"alpha": 10.0},
}
TARGET_MS = {"one_sensor_p99": 10.0, "all_sensors_p99": 25.0, "push_p99": 250.0}
ONE_ROUTE, ALL_ROUTE = "/v1/forecasts/{sensor_id}", "/v1/forecasts"


def say(message: str) -> None:
    print(f"[api_latency] {message}", file=sys.stderr, flush=True)


def percentiles(values_ms: list[float] | np.ndarray) -> dict[str, float | None]:
    if len(values_ms) == 0:
        return dict.fromkeys(("p50", "p95", "p99", "max"), None)
    p50, p95, p99 = np.percentile(values_ms, [50, 95, 99])
    return {
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "max": round(float(np.max(values_ms)), 2),
    }


# --- set-up --------------------------------------------------------------------------------


def ensure_vegeta(vegeta: Path = VEGETA) -> Path:
    """A fresh machine builds vegeta once with Go (the module proxy serves it)."""
    if vegeta.exists():
        return vegeta
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        raise SystemExit("vegeta is missing and no Go toolchain was found to build it")
    say(f"installing vegeta ({VEGETA_MODULE}) into {vegeta.parent}")
    vegeta.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [go, "install", VEGETA_MODULE],
        env={**os.environ, "GOBIN": str(vegeta.parent)},
        check=True,
        timeout=900,
        stdout=sys.stderr,
    )
    return vegeta


def model_root(family: str, speeds: pd.DataFrame, state: Path = STATE) -> Path:
    key = json.dumps(
        [family, MODEL_PARAMS[family], features.FEATURE_VERSION, frame_fingerprint(speeds)],
        sort_keys=True,
    )
    return state / "models" / f"{family}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def published_model(
    family: str,
    speeds: pd.DataFrame,
    graph: Callable[[], SensorGraph],
    retrain: bool,
    state: Path = STATE,
) -> tuple[Path, str]:
    """A registry holding one model trained on `speeds` over the network `graph()` (built only
    when training), reused while family, parameters, features and data stay the same (the
    bench measures serving, not training)."""
    params = MODEL_PARAMS[family]
    root = model_root(family, speeds, state)
    registry = ModelRegistry(root)
    if retrain or registry.latest() is None:
        shutil.rmtree(root, ignore_errors=True)
        say(f"training {family} {params} on {speeds.index[0]} .. {speeds.index[-1]}")
        started = time.perf_counter()
        train_and_publish(root, speeds, graph(), family, params, code_version="bench")
        say(f"trained and published in {time.perf_counter() - started:.0f} s")
    version = registry.latest()
    assert version is not None
    return root, version


def api_topics(events: str = EVENTS) -> list[TopicSpec]:
    """What the API reads (`events`, 12 partitions as deployed) and writes."""
    topics = [TopicSpec(events, 12), TopicSpec(DLQ, 1)]
    return topics + [TopicSpec(f"{events}-{kind}", 2) for kind in ("predictions", "alerts")]


def start_broker(broker: KafkaBroker) -> None:
    """Start `broker` and create the API's topics as the admin principal (under TLS the API
    may not); the ACLs follow the API's topic settings of this process's environment."""
    os.environ.update(api_topic_env(EVENTS))
    broker.start()
    ensure_topics(AdminClient(broker.client_config("traffic-admin")), api_topics())
    create_topics(broker)  # the publisher election topic


def server_options() -> list[str]:
    """httptools and uvloop when installed (uvicorn's `auto` would pick them too; explicit
    so the figures say what ran)."""
    options = []
    if importlib.util.find_spec("httptools"):
        options += ["--http", "httptools"]
    if importlib.util.find_spec("uvloop"):
        options += ["--loop", "uvloop"]
    return options


def api_topic_env(events: str) -> dict[str, str]:
    """The topics the API reads and writes: `events` and the `api_topics(events)` outputs."""
    return {
        "TRAFFIC_API_EVENTS_TOPIC": events,
        "TRAFFIC_API_PREDICTIONS_TOPIC": f"{events}-predictions",
        "TRAFFIC_API_ALERTS_TOPIC": f"{events}-alerts",
    }


def api_env(
    registry: Path,
    broker: KafkaBroker,
    jwt_secret: str,
    state: Path = STATE,
    dataset: str | None = None,
    events: str = EVENTS,
) -> dict[str, str]:
    """The API's settings; `dataset` names its network (default: the API's own, metr-la),
    `events` the topic it follows (with the `api_topics(events)`)."""
    return {
        "TRAFFIC_API_MODEL_DIR": str(registry),
        "TRAFFIC_API_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        **api_topic_env(events),
        "TRAFFIC_API_JWT_SECRET": jwt_secret,
        "TRAFFIC_API_RATE_LIMIT": "1000000/second",  # the bench is one principal
        "TRAFFIC_API_AUDIT_URL": f"sqlite:///{state / 'api' / 'audit.sqlite3'}",
    } | ({"TRAFFIC_API_DATASET": dataset} if dataset else {})


def verify(api: WebService) -> ssl.SSLContext | bool:
    """How a client checks the API: by the stack's CA when it serves HTTPS."""
    return True if api.ca_file is None else ssl.create_default_context(cafile=api.ca_file)


def wait_ready(api: WebService, timeout: float = 180.0, workers: int = 1) -> dict[str, Any]:
    """/v1/ready answers 200 once the model is loaded and the live state rebuilt; with several
    workers, 10 answers per worker in a row on new connections (each reaches some worker)."""
    deadline = time.monotonic() + timeout
    answer: httpx.Response | None = None
    in_a_row = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(f"{api.url}/v1/ready", timeout=5, verify=verify(api))
            in_a_row = in_a_row + 1 if answer.status_code == 200 else 0
            if in_a_row >= (1 if workers == 1 else 10 * workers):
                return answer.json()
        time.sleep(0.5 if not in_a_row else 0.05)
    raise SystemExit(f"API not ready after {timeout:.0f} s: {answer and answer.text}")


def code_version() -> dict[str, object]:
    """The figures belong to the checkout they ran from, edits included."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return {"git_commit": git_commit(REPO_ROOT), "uncommitted_changes": bool(status.stdout)}


# --- measuring -----------------------------------------------------------------------------


class ServerSide:
    """What the server saw during one phase: its request-duration histogram for a route
    (Prometheus buckets, from /metrics; one worker only, since each worker process keeps its
    own) and the CPU time of the API's processes."""

    def __init__(self, api: WebService, route: str, workers: int = 1) -> None:
        self.api, self.route, self.workers = api, route, workers
        self._buckets = self._histogram()
        self._cpu = self._cpu_seconds()
        self._wall = time.monotonic()

    def _histogram(self) -> dict[float, float]:
        if self.workers > 1:  # a scrape reaches one worker of several: not the phase's whole
            return {}
        text = httpx.get(f"{self.api.url}/metrics", timeout=10, verify=verify(self.api)).text
        buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "api_request_duration_seconds":
                continue
            for sample in family.samples:
                labels = sample.labels
                if sample.name.endswith("_bucket") and labels.get("route") == self.route:
                    le = float(labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value  # summed over statuses
        return buckets

    def _cpu_seconds(self) -> float:
        pid = self.api.process.pid()
        if pid is None:
            return float("nan")
        return sum(map(_cpu_seconds_of, [pid, *descendants(pid)]))

    def since(self, requests: int) -> dict[str, Any]:
        """Share of requests the app (middleware to response) answered within each bucket
        (None with several workers), and the API's CPU per request of the `requests` sent."""
        after = self._histogram()
        wall = time.monotonic() - self._wall
        delta = {le: after[le] - self._buckets.get(le, 0.0) for le in sorted(after)}
        total = delta.get(float("inf"), 0.0)
        within = {
            f"{le * 1000:g}": round(n / total, 4) if total else None
            for le, n in delta.items()
            if le <= 0.025
        } or None
        cpu = self._cpu_seconds() - self._cpu
        return {
            "app_share_within_ms": within,
            "api_cpu_percent": round(100 * cpu / wall),
            "api_cpu_ms_per_request": round(1000 * cpu / requests, 3) if requests else None,
        }


def _cpu_seconds_of(pid: int) -> float:
    """User + system CPU of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def attack(
    vegeta: Path,
    urls: list[str],
    token: str,
    rate: int,
    seconds: float,
    results: Path,
    max_body: int = -1,
    ca_file: Path | None = None,
) -> dict[str, Any]:
    """vegeta at `rate` requests/s for `seconds`, cycling over `urls`; its JSON report.
    `max_body` caps the bytes of each body kept in the results file (-1: all); `ca_file`
    is the only root it trusts for HTTPS."""
    targets = results.with_suffix(".targets")
    targets.write_text("".join(f"GET {url}\n" for url in urls))
    started = children_cpu_seconds()
    subprocess.run(
        [
            str(vegeta),
            "attack",
            f"-rate={rate}/s",
            f"-duration={seconds}s",
            "-timeout=10s",
            f"-header=Authorization: Bearer {token}",
            f"-targets={targets}",
            f"-output={results}",
            f"-max-body={max_body}",
            *([f"-root-certs={ca_file}"] if ca_file else []),
        ],
        check=True,
        timeout=seconds + 120,
    )
    generator_cpu = children_cpu_seconds() - started
    report = subprocess.run(
        [str(vegeta), "report", "-type=json", str(results)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return {**json.loads(report.stdout), "generator_cpu_seconds": generator_cpu}


def http_phase(
    vegeta: Path,
    api: WebService,
    route: str,
    urls: list[str],
    token: str,
    rate: int,
    seconds: float,
    warmup: float,
    target_ms: float,
    out: Path = STATE,
    max_body: int = -1,
    workers: int = 1,
) -> dict[str, Any]:
    """A warm-up attack (discarded: connections, caches), then the measured one; vegeta's
    files go to `out`."""
    name = "one_sensor" if route == ONE_ROUTE else "all_sensors"
    say(f"{name}: warm-up {warmup:g} s, then {rate}/s for {seconds:g} s")
    ca = api.ca_file
    attack(vegeta, urls, token, rate, warmup, out / f"{name}-warmup.bin", max_body, ca)
    server = ServerSide(api, route, workers)
    report = attack(vegeta, urls, token, rate, seconds, out / f"{name}.bin", max_body, ca)
    codes = {str(k): int(v) for k, v in report.get("status_codes", {}).items()}
    errors = int(report["requests"]) - codes.get("200", 0)
    latency = report["latencies"]
    figures = {
        "p50": latency["50th"] / 1e6,
        "p95": latency["95th"] / 1e6,
        "p99": latency["99th"] / 1e6,
        "max": latency["max"] / 1e6,
        "mean": latency["mean"] / 1e6,
    }
    result = {
        "route": f"GET {route}",
        "rate_per_s": rate,
        "seconds": seconds,
        "requests": int(report["requests"]),
        "sent_per_s": round(report["rate"], 1),
        "answered_per_s": round(report["throughput"], 1),
        "errors": errors,
        "status_codes": codes,
        "error_messages": (report.get("errors") or [])[:5],
        "latency_ms": {k: round(v, 2) for k, v in figures.items()},
        "response_bytes": round(report["bytes_in"]["mean"]),
        **server.since(int(report["requests"])),
        "generator_cpu_percent": round(100 * report["generator_cpu_seconds"] / seconds),
        "target_p99_ms": target_ms,
        "met": errors == 0 and figures["p99"] <= target_ms,
    }
    say(f"{name}: {json.dumps(result['latency_ms'])} ms, errors {errors}")
    return result


async def push_latency(
    api: WebService,
    token: str,
    sink: ReadingProducer,
    windows: pd.DataFrame,
    pause: float,
    source: str = "metr-la",
    wait: float = 10.0,
) -> dict[str, Any]:
    """Produce one window's readings at a time and wait for its forecasts on the WebSocket.

    Timed from just before the readings are produced (producer linger and acks included) to
    the message's arrival. The split: until the broker had acknowledged all of the window's
    readings (`produced_and_acked`), then consuming, forecasting and pushing (`after_acked`).
    Readings of a `source` other than metr-la are flagged synthetic; a window whose forecasts
    take longer than `wait` seconds counts as missed.
    """
    url = api.url.replace("http", "ws", 1) + f"/v1/stream/ws?access_token={token}"
    tls = verify(api)
    loop = asyncio.get_running_loop()
    waiting: dict[pd.Timestamp, asyncio.Future[float]] = {}
    latencies, acked, after_acked, missed, failures = [], [], [], [], 0
    async with connect(
        url,
        max_size=None,
        open_timeout=10,
        ping_interval=None,
        ssl=tls if isinstance(tls, ssl.SSLContext) else None,
    ) as socket:

        async def receive() -> None:
            async for raw in socket:
                arrived = time.perf_counter()
                message = orjson.loads(raw)
                if message.get("type") != "forecasts":
                    continue
                window = pd.Timestamp(message["data"]["issued_for"]).tz_convert(None)
                future = waiting.get(window)
                if future is not None and not future.done():
                    future.set_result(arrived)

        receiver = asyncio.create_task(receive())
        try:
            for stamp in windows.index:
                waiting[stamp] = loop.create_future()
                started = time.perf_counter()
                summary = await asyncio.to_thread(
                    replay_speeds,
                    windows.loc[[stamp]],
                    sink,
                    source=source,
                    is_synthetic=source != "metr-la",
                )
                acked_at = time.perf_counter()
                acked.append((acked_at - started) * 1000)
                failures += summary.delivery_failures
                try:
                    arrived = await asyncio.wait_for(waiting[stamp], timeout=wait)
                    latencies.append((arrived - started) * 1000)
                    after_acked.append((arrived - acked_at) * 1000)
                except TimeoutError:
                    missed.append(str(stamp))
                    say(f"push: no forecasts for {stamp} within {wait:g} s")
                await asyncio.sleep(pause)
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
    figures = percentiles(latencies)
    result = {
        "windows": len(windows),
        "received": len(latencies),
        "errors": len(missed) + failures,
        "missed_windows": missed[:10],
        "delivery_failures": failures,
        "pause_between_windows_s": pause,
        "latency_ms": figures,
        "produced_and_acked_ms": percentiles(acked),
        "after_acked_ms": percentiles(after_acked),
        "target_p99_ms": TARGET_MS["push_p99"],
        "met": not missed
        and failures == 0
        and figures["p99"] is not None
        and figures["p99"] <= TARGET_MS["push_p99"],
    }
    say(f"push: {json.dumps(figures)} ms over {len(latencies)} windows, missed {len(missed)}")
    return result


# --- running -------------------------------------------------------------------------------


@contextlib.contextmanager
def stopped_on_exit(*services: KafkaBroker | WebService) -> Iterator[Callable[[], None]]:
    """Stop `services` on any exit (error, Ctrl-C or SIGTERM); yields `remember`, to call once
    they run. `stop()` finds a process by its pid file, and a run of bench/ingest_throughput.py
    wipes all of .local/bench: remembered pids are written back first (stop() still checks
    that the pid's command line is the service's)."""
    pids: dict[KafkaBroker | WebService, int] = {}

    def remember() -> None:
        pids.update({s: pid for s in services if (pid := s.process.pid()) is not None})

    def terminate(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield remember
    finally:
        for service in services:
            pid_file = service.process.pid_file
            with contextlib.suppress(Exception):
                if service in pids and not pid_file.exists():
                    pid_file.parent.mkdir(parents=True, exist_ok=True)
                    pid_file.write_text(str(pids[service]))
                service.stop()
        signal.signal(signal.SIGTERM, previous)


def run(
    broker: KafkaBroker,
    api: WebService,
    vegeta: Path,
    speeds: pd.DataFrame,
    registry: Path,
    args: Any,
) -> dict[str, Any]:
    """The three figures against `broker` and `api` (fresh state), under the security switch
    `broker` implies for every client of this process and the API."""
    use_security(broker.security_dir)
    for leftover in (api, broker):  # a previous run killed mid-way
        leftover.stop()
    shutil.rmtree(broker.state_dir, ignore_errors=True)
    shutil.rmtree(api.state_dir, ignore_errors=True)
    load = [round(x, 2) for x in os.getloadavg()]
    with stopped_on_exit(api, broker) as remember:
        say(f"starting the broker ({broker.security.security})")
        start_broker(broker)
        sink = ReadingProducer(broker.bootstrap_servers, topic=EVENTS, dlq_topic=DLQ)
        warm = speeds.loc[LIVE_FROM : PUSH_FROM - pd.Timedelta("5min")]
        say(f"replaying {warm.index[0]} .. {warm.index[-1]} ({warm.size} readings)")
        replayed = replay_speeds(warm, sink, source="metr-la", is_synthetic=False)
        if replayed.delivery_failures:
            raise SystemExit(f"{replayed.delivery_failures} readings not delivered")
        jwt_secret = secrets.token_urlsafe(48)
        say(f"starting the API on {api.url}")
        api.start(api_env(registry, broker, jwt_secret, state=api.state_dir.parent))
        ready = wait_ready(api, workers=args.workers)
        remember()
        security = SecuritySettings(jwt_secret=jwt_secret)
        token = issue_token("bench", ["planner"], security, ttl=4 * 3600)
        sensors = [str(s) for s in speeds.columns]

        phases = {
            "one_sensor": (ONE_ROUTE, [f"{api.url}/v1/forecasts/{s}" for s in sensors]),
            "all_sensors": (ALL_ROUTE, [f"{api.url}/v1/forecasts"]),
        }
        rates = {"one_sensor": args.one_rate, "all_sensors": args.all_rate}
        http = {
            name: http_phase(
                vegeta,
                api,
                route,
                urls,
                token,
                rates[name],
                args.seconds,
                args.warmup,
                TARGET_MS[f"{name}_p99"],
                out=api.state_dir,
                workers=args.workers,
            )
            if rates[name]
            else None
            for name, (route, urls) in phases.items()
        }
        windows = speeds.loc[PUSH_FROM:].iloc[: args.windows]
        say(f"push: {len(windows)} windows from {windows.index[0]}, one at a time")
        push = asyncio.run(push_latency(api, token, sink, windows, args.pause))
        del sink  # its delivery callback makes a cycle: collect it so it disconnects now,
        gc.collect()  # not after the broker has stopped (librdkafka would log the refusals)
    return {
        "security": broker.security.security,
        "api_url": api.url,
        "served": ready.get("model"),
        "load_average_at_start": load,
        **http,
        "push": push,
        "targets_met": all(p is None or p["met"] for p in [*http.values(), push]),
    }


def tls_cost(plain: dict[str, Any], tls: dict[str, Any]) -> dict[str, Any]:
    """TLS minus plaintext, in ms, for each figure's p50 and p99."""
    cost: dict[str, Any] = {}
    for phase in ("one_sensor", "all_sensors", "push"):
        if plain[phase] is None or tls[phase] is None:
            continue
        before, after = plain[phase]["latency_ms"], tls[phase]["latency_ms"]
        cost[f"{phase}_ms"] = {
            q: round(after[q] - before[q], 2) if None not in (after[q], before[q]) else None
            for q in ("p50", "p99")
        }
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODEL_PARAMS), default="xgboost")
    parser.add_argument("--retrain", action="store_true", help="ignore the cached model")
    parser.add_argument("--one-rate", type=int, default=1000, help="one-sensor requests/s")
    parser.add_argument(
        "--all-rate", type=int, default=100, help="all-sensor requests/s (0: not measured)"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="per HTTP phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds, discarded")
    parser.add_argument("--windows", type=int, default=40, help="push windows timed")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between windows")
    parser.add_argument("--port", type=int, default=39180, help="API port")
    parser.add_argument(
        "--kafka-port",
        type=int,
        default=BROKER.port,
        help="plaintext broker (controller on the next port; the TLS broker 4 above)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes (each a whole replica)"
    )
    parser.add_argument(
        "--security",
        choices=["plaintext", "tls", "both"],
        default="plaintext",
        help="broker, API and clients in plaintext, under TRAFFIC_SECURITY=tls, or both on "
        "the same run, one after the other",
    )
    args = parser.parse_args()
    if not 1 <= args.windows <= 150:  # 6 March has 192 windows after PUSH_FROM
        parser.error("--windows must be between 1 and 150")
    load_at_start = os.getloadavg()

    vegeta = ensure_vegeta()
    data_dir = PlatformSettings().data_dir
    speeds = load_speed_csv(data_dir / SIX_DAYS)
    registry, version = published_model(
        args.model,
        speeds.loc[:TRAIN_UNTIL],
        lambda: load_metr_la_graph(data_dir / "metr-la"),
        args.retrain,
    )
    options = server_options() + (["--workers", str(args.workers)] if args.workers > 1 else [])
    os.environ["TRAFFIC_SCHEMA_REGISTRY_URL"] = ""  # built-in ids: the bench measures serving
    results = {}
    if args.security in ("plaintext", "both"):
        api = api_service(STATE / "api", port=args.port, extra_args=options)
        broker = replace(BROKER, port=args.kafka_port, controller_port=args.kafka_port + 1)
        results["plaintext"] = run(broker, api, vegeta, speeds, registry, args)
    if args.security in ("tls", "both"):
        ca = CertificateAuthority(STATE / "tls" / "security")
        api = api_service(STATE / "tls" / "api", port=args.port, extra_args=options, tls=ca)
        port = args.kafka_port + 4
        broker = replace(TLS_BROKER, port=port, controller_port=port + 1)
        results["tls"] = run(broker, api, vegeta, speeds, registry, args)

    print(
        json.dumps(
            {
                "bench": "api_latency",
                "model": {"family": args.model, "params": MODEL_PARAMS[args.model]}
                | {"version": version},
                "server": {
                    "command": " ".join(["uvicorn", *api.command[1:]]),
                    "workers": args.workers,
                    "auth": "JWT bearer (HS256), rate limit and audit log on",
                },
                "code": code_version(),
                "generator": f"vegeta {VEGETA_MODULE.rsplit('@', 1)[1]}, open loop",
                "warmup_seconds": args.warmup,
                "sensors": speeds.shape[1],
                "security": args.security,
                **(results if args.security == "both" else next(iter(results.values()))),
                **(
                    {"tls_cost": tls_cost(results["plaintext"], results["tls"])}
                    if args.security == "both"
                    else {}
                ),
                "machine": {
                    **machine(),
                    "load_average_at_start": load_at_start,
                    "load_average_at_end": os.getloadavg(),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
