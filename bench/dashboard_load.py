"""Load time of the dashboard's live map with all 207 sensors, in headless Chromium.

Seconds from navigation start until the map page shows its sensor count (207) and the map is
drawn (the SVG map by default; deck.gl's canvas when tiles are configured), with every lazily
loaded element in place, for two kinds of visit, alternated: a first visit (a fresh browser
context: no HTTP cache, no compiled scripts) and a visit again (a new tab in a context that
loaded the dashboard before, as a planner opening it each morning).
Loads go to a warm Streamlit server, spaced beyond the dashboard's 10-second live cache so
each asks the API for forecasts and network status again. The very first load of a fresh
server (imports of pandas, pydeck, Altair) is reported on its own.
Target: 3 s on 2 cores, measured, not asserted.

By default it brings up the real stack as bench/api_latency.py does, on ports 29281/29292/29293
and state under .local/dashboard-bench of its own: a broker, a ridge model trained on 1-5 March
2012 (cached), 6 March 06:00-07:55 replayed, `uvicorn serving.app:app`; then `streamlit run
dashboard/app.py`.
With --api-url and --token it measures against an API already running (e.g. `make demo`).
Prints one JSON object on stdout, progress on stderr.

    .venv/bin/python bench/dashboard_load.py [--runs 10] [--api-url URL --token JWT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from playwright.sync_api import Browser, BrowserContext, sync_playwright

from bench import api_latency as stack
from bench.ingest_throughput import machine
from dashboard.client import LIVE_TTL_SECONDS
from infra.stack.browser import MAP_DRAWN, VIEWPORT, launch_chromium, running_dashboard, settle
from infra.stack.kafka import KafkaBroker
from infra.stack.web import api_service
from serving.security import SecuritySettings, issue_token
from traffic_core.datasets import load_metr_la_graph, load_speed_csv
from traffic_core.features import FEATURE_VERSION
from traffic_core.ingestion.producer import ReadingProducer, replay_speeds
from traffic_core.models.quick import train_and_publish
from traffic_core.registry import ModelRegistry, frame_fingerprint
from traffic_core.settings import LOCAL_STATE_DIR, PlatformSettings

STATE = LOCAL_STATE_DIR / "dashboard-bench"
"""Not under .local/bench: bench/ingest_throughput.py wipes that whole folder when it starts."""
API_PORT = 29281
BROKER = KafkaBroker(
    state_dir=STATE / "kafka",
    libs_dir=LOCAL_STATE_DIR / "kafka" / "libs",
    port=29292,
    controller_port=29293,
)
"""Fixed ports below Linux's ephemeral range (32768-60999): a load test's client sockets there
once held 39293 in TIME-WAIT and the broker could not bind it."""
TARGET_S = 3.0
SENSORS = 207
COUNT = '[data-testid="stMetric"]:has-text("Sensors on map") [data-testid="stMetricValue"]'
TITLE = 'h1:has-text("Live network map")'
NAVIGATION_TIMING = """() => {
    const nav = performance.getEntriesByType("navigation")[0];
    const scripts = performance.getEntriesByType("resource")
        .filter(r => r.initiatorType === "script");
    return {
        dom_content_loaded: nav.domContentLoadedEventEnd,
        load_event: nav.loadEventEnd,
        scripts_fetched: Math.max(0, ...scripts.map(r => r.responseEnd)),
    };
}"""
"""Milliseconds since navigation start, from the browser's own Performance API."""
MILESTONES = ("dom_content_loaded", "load_event", "scripts_fetched", "title", "count", "drawn")


def say(message: str) -> None:
    print(f"[dashboard_load] {message}", file=sys.stderr, flush=True)


def published_ridge(speeds: pd.DataFrame, data_dir: Path) -> tuple[Path, str]:
    """A ridge model on `speeds` in this bench's own registry, reused while the feature code
    and the data stay the same (the bench measures the dashboard, not training)."""
    key = f"ridge-{FEATURE_VERSION}-{frame_fingerprint(speeds)[:12]}"
    root = STATE / "models" / key
    registry = ModelRegistry(root)
    if registry.latest() is None:
        shutil.rmtree(root, ignore_errors=True)
        say(f"training ridge on {speeds.index[0]} .. {speeds.index[-1]}")
        graph = load_metr_la_graph(data_dir / "metr-la")
        train_and_publish(root, speeds, graph, "ridge", {"alpha": 10.0}, code_version="bench")
    version = registry.latest()
    assert version is not None
    return root, version


@contextlib.contextmanager
def own_api() -> Iterator[tuple[str, str]]:
    """The real API over its own broker and a real model, set up as bench/api_latency.py does
    but on ports and state of its own, so the two benches never touch each other."""
    data_dir = PlatformSettings().data_dir
    speeds = load_speed_csv(data_dir / stack.SIX_DAYS)
    registry, version = published_ridge(speeds.loc[: stack.TRAIN_UNTIL], data_dir)
    api = api_service(STATE / "api", port=API_PORT)
    for leftover in (api, BROKER):  # this bench's own, from a run killed mid-way
        leftover.stop()
    shutil.rmtree(STATE / "kafka", ignore_errors=True)
    with stack.stopped_on_exit(api, BROKER):
        say("starting the broker and replaying 6 March 06:00-07:55")
        stack.start_broker(BROKER)
        sink = ReadingProducer(BROKER.bootstrap_servers, topic=stack.EVENTS, dlq_topic=stack.DLQ)
        live = speeds.loc[stack.LIVE_FROM : stack.LIVE_FROM + pd.Timedelta("115min")]
        replayed = replay_speeds(live, sink, source="metr-la", is_synthetic=False)
        if replayed.delivery_failures:
            raise SystemExit(f"{replayed.delivery_failures} readings not delivered")
        del sink
        secret = secrets.token_urlsafe(48)
        say(f"starting the API with model {version} on {api.url}")
        audit = f"sqlite:///{STATE / 'audit.sqlite3'}"
        api.start({**stack.api_env(registry, BROKER, secret), "TRAFFIC_API_AUDIT_URL": audit})
        stack.wait_ready(api)
        token = issue_token("bench", ["planner"], SecuritySettings(jwt_secret=secret), ttl=3600)
        yield api.url, token


def map_load_seconds(context: BrowserContext, url: str, timeout_s: float) -> dict[str, float]:
    """Seconds from navigation start to each milestone of a map load in a new tab of
    `context`: the browser's DOMContentLoaded and load events (Streamlit's scripts fetched and
    run), the page title (the front end connected and the script's first output arrived), the
    sensor count (the API's data on the page), the map drawn, and the page settled (the
    script finished, lazily loaded elements in place: "map")."""
    page = context.new_page()
    try:
        started = time.perf_counter()
        wait_ms = timeout_s * 1000
        page.goto(url, wait_until="commit", timeout=wait_ms)
        marks: dict[str, float] = {}
        for name, locator in (
            ("title", page.locator(TITLE)),
            ("count", page.locator(COUNT).filter(has_text=str(SENSORS))),
            ("drawn", page.locator(MAP_DRAWN)),
        ):
            locator.first.wait_for(state="visible", timeout=wait_ms)
            marks[name] = time.perf_counter() - started
        settle(page, MAP_DRAWN, timeout_s)
        marks["map"] = time.perf_counter() - started
        timing = page.evaluate(NAVIGATION_TIMING)
        return marks | {name: ms / 1000 for name, ms in timing.items()}
    finally:
        page.close()


def first_visit(browser: Browser, url: str, timeout_s: float) -> dict[str, float]:
    """A browser that never saw the dashboard: no HTTP cache, no compiled scripts."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        return map_load_seconds(context, url, timeout_s)
    finally:
        context.close()


def figures(seconds: list[float]) -> dict[str, float]:
    return {
        "p50": round(float(np.percentile(seconds, 50)), 3),
        "p90": round(float(np.percentile(seconds, 90)), 3),
        "max": round(max(seconds), 3),
        "min": round(min(seconds), 3),
    }


def measure(api_url: str, token: str, runs: int, pause: float, timeout_s: float) -> dict:
    env = {
        "TRAFFIC_API_URL": api_url,
        "TRAFFIC_DASHBOARD_TOKEN": token,
        "TRAFFIC_LAKE_DIR": str(STATE / "lake"),  # the map page does not read the lake
    }
    with running_dashboard(STATE / "dashboard", env) as dashboard, sync_playwright() as pw:
        browser = launch_chromium(pw)
        say(f"dashboard at {dashboard.url}; first load of a fresh server")
        first = first_visit(browser, dashboard.url, timeout_s)["map"]
        returning = browser.new_context(viewport=VIEWPORT)
        map_load_seconds(returning, dashboard.url, timeout_s)  # the visit it returns from
        loads: dict[str, list[dict[str, float]]] = {"first": [], "again": []}
        for run in range(runs):  # alternated, so both kinds see the same machine
            for kind, visits in loads.items():
                time.sleep(pause)
                if kind == "first":
                    marks = first_visit(browser, dashboard.url, timeout_s)
                else:
                    marks = map_load_seconds(returning, dashboard.url, timeout_s)
                visits.append(marks)
                shown = ", ".join(f"{k} {v:.2f}" for k, v in marks.items())
                say(f"run {run + 1}/{runs} {kind} visit (s): {shown}")
        returning.close()
        browser.close()
    return {"first_load_of_server_s": round(first, 3)} | {
        f"{kind}_visit": {
            "map_visible_s": figures([marks["map"] for marks in visits]),
            "sensor_count_visible_s": figures([marks["count"] for marks in visits]),
            "milestones_p50_s": {
                name: round(float(np.median([marks[name] for marks in visits])), 3)
                for name in MILESTONES
            },
            "runs_s": [round(marks["map"], 3) for marks in visits],
        }
        for kind, visits in loads.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--pause",
        type=float,
        default=LIVE_TTL_SECONDS + 1.0,
        help="seconds between runs; past the live cache by default",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per load")
    parser.add_argument("--api-url", help="an API already running (default: start one)")
    parser.add_argument("--token", default=os.environ.get("TRAFFIC_DASHBOARD_TOKEN"))
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.api_url and not args.token:
        parser.error("--api-url needs --token (or TRAFFIC_DASHBOARD_TOKEN)")

    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack_of:
        if args.api_url:
            api_url, token, source = args.api_url, args.token, "given"
        else:
            api_url, token = stack_of.enter_context(own_api())
            source = "own real stack (ridge model, 6 March 06:00-07:55 replayed)"
        result = measure(api_url, token, args.runs, args.pause, args.timeout)
    print(
        json.dumps(
            {
                "bench": "dashboard_load",
                "page": "live map",
                "sensors": SENSORS,
                "api": source,
                "browser": "Debian chromium, headless; first visit: a fresh context (no "
                "cache) per load; again: a new tab in a context that loaded it before",
                "runs": args.runs,
                "pause_s": args.pause,
                **result,
                "target_s": TARGET_S,
                "target_met_p50": {
                    kind: result[f"{kind}_visit"]["map_visible_s"]["p50"] <= TARGET_S
                    for kind in ("first", "again")
                },
                "machine": {
                    **machine(),
                    "load_average_before": load_before,
                    "load_average_after": os.getloadavg(),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
