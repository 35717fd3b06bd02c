"""Prometheus metrics of the API: request latency per route, and the service's state (model
version, live-state lag, windows, alerts, subscribers) read at scrape time by a collector."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from serving.security.audit import AuditWriter
from serving.service import ForecastService

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class RequestMetrics:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware on every request)."""

    def __init__(self, app: Any, registry: CollectorRegistry) -> None:
        self.app = app
        self.latency = Histogram(
            "api_request_duration_seconds",
            "Time to answer a request, by route template, method and status.",
            ("route", "method", "status"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.latency.labels(template, scope["method"], str(status[0])).observe(
                time.perf_counter() - started
            )


class ServiceCollector(Collector):
    def __init__(self, service: ForecastService) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        svc = self.service
        bundle = svc.holder.current
        info = InfoMetricFamily("api_model", "The model version being served.")
        info.add_metric([], {"version": bundle.version if bundle else "none"})
        yield info
        yield CounterMetricFamily(
            "api_model_swaps", "Model versions swapped in.", value=svc.holder.swaps
        )
        ready = GaugeMetricFamily("api_ready", "1 when forecasts can be served.")
        ready.add_metric([], 0.0 if svc.reason() else 1.0)
        yield ready
        if svc.publisher is not None:
            yield GaugeMetricFamily(
                "api_publisher_leading",
                "1 while this replica is the one publishing forecasts and alerts to Kafka.",
                value=1.0 if svc.publisher.leading else 0.0,
            )
            yield CounterMetricFamily(
                "api_publish_withheld_batches",
                "Batches of records (a window's forecasts or alerts) another replica publishes.",
                value=svc.publisher.withheld,
            )
        if svc.consumer is not None:
            yield GaugeMetricFamily(
                "api_live_lag_messages",
                "Events on Kafka not yet in the live state.",
                value=float(svc.consumer.lag()),
            )
        yield from _context_metrics(svc)
        latest = svc.live.latest_closed()
        yield GaugeMetricFamily(
            "api_live_latest_window_timestamp_seconds",
            "Start of the newest closed window (event time).",
            value=latest.timestamp() if latest is not None else float("nan"),
        )
        for name, value in dataclasses.asdict(svc.live.stats()).items():
            if isinstance(value, int):
                yield GaugeMetricFamily(f"api_live_{name}", f"Live state: {name}.", value=value)
        yield CounterMetricFamily(
            "api_alerts", "Alerts raised or cleared.", value=len(svc.alerts.recent)
        )
        yield GaugeMetricFamily(
            "api_stream_subscribers",
            "WebSocket and SSE clients.",
            value=svc.broadcaster.subscribers,
        )
        yield CounterMetricFamily(
            "api_stream_dropped",
            "Messages dropped for slow subscribers.",
            value=svc.broadcaster.dropped,
        )


def _context_metrics(svc: ForecastService) -> Iterator[Any]:
    """The incident and weather feeds: records used, bad records skipped, what is held."""
    applied = CounterMetricFamily(
        "api_context_records", "Incident and weather records applied.", labels=["topic"]
    )
    rejected = CounterMetricFamily(
        "api_context_rejected",
        "Bad incident and weather records skipped, by reason.",
        labels=["topic", "reason"],
    )
    for consumer in svc.context_consumers:
        applied.add_metric([consumer.topic], consumer.applied)
        for reason, count in consumer.rejected().items():
            rejected.add_metric([consumer.topic, reason], count)
    yield applied
    yield rejected
    yield GaugeMetricFamily(
        "api_incidents_held", "Incidents in memory (any status).", value=len(svc.incidents)
    )
    yield GaugeMetricFamily(
        "api_weather_stations", "Stations with a latest observation.", value=len(svc.weather)
    )


class AuditCollector(Collector):
    """What became of the audit rows; anything but `written` deserves a look (see
    serving/security/audit_spill.py for where spilled and quarantined rows are)."""

    def __init__(self, writer: AuditWriter) -> None:
        self.writer = writer

    def collect(self) -> Iterator[Any]:
        writer = self.writer
        rows = CounterMetricFamily(
            "api_audit_rows",
            "Audit rows by outcome: written to the database (replayed: of them, from spill "
            "files), quarantined (refused by the database), spilled to disk, dropped (backlog "
            "full) or lost (nowhere to go at shutdown).",
            labels=["outcome"],
        )
        for outcome in ("written", "replayed", "quarantined", "spilled", "dropped"):
            rows.add_metric([outcome], getattr(writer, outcome))
        rows.add_metric(["lost"], writer.failed)
        yield rows
        yield GaugeMetricFamily(
            "api_audit_backlog", "Audit rows waiting in memory.", value=writer.backlog
        )
