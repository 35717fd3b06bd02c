"""Prometheus metrics and JSON log lines of a scale-out ingestion worker."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from traffic_core.json_logs import json_line_formatter


class IngestMetrics:
    """One registry per worker, so several workers (or tests) in one process never clash."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "traffic_ingest_events", "Valid readings written to the lake", ["topic"], registry=r
        )
        self.rejected = Counter(
            "traffic_ingest_rejected",
            "Messages sent to the dead-letter topic, by reason",
            ["topic", "reason"],
            registry=r,
        )
        self.unknown_fields = Counter(
            "traffic_ingest_unknown_fields",
            "Stored readings whose JSON had fields the schema lacks (reason UNKNOWN_FIELD)",
            ["topic"],
            registry=r,
        )
        self.skipped = Counter(
            "traffic_ingest_already_stored",
            "Re-read messages whose offsets the lake already held (not written again)",
            ["topic"],
            registry=r,
        )
        self.files = Counter(
            "traffic_ingest_files", "Raw Parquet files written", ["topic"], registry=r
        )
        self.lag = Gauge(
            "traffic_ingest_consumer_lag",
            "Messages of an assigned partition not yet durably stored and committed",
            ["topic", "partition"],
            registry=r,
        )
        self.rebalances = Counter(
            "traffic_ingest_rebalances",
            "Partitions assigned, revoked or lost in group rebalances",
            ["event"],
            registry=r,
        )
        self.commits = Counter(
            "traffic_ingest_commits", "Offset commits, by outcome", ["outcome"], registry=r
        )
        self.last_commit = Gauge(
            "traffic_ingest_last_commit_timestamp_seconds",
            "Unix time of the last successful offset commit",
            registry=r,
        )
        self.flush_seconds = Histogram(
            "traffic_ingest_flush_seconds",
            "Time to classify, write and commit one flush",
            registry=r,
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose /metrics on a daemon thread (port 0: not at all)."""
        if port:
            start_http_server(port, addr=host, registry=self.registry)


class _WorkerIdFilter(logging.Filter):
    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker_id = self.worker_id
        return True


def configure_worker_logging(
    worker_id: str, level: int | str = "INFO", stream: TextIO | None = None
) -> None:
    """JSON lines on stderr (or stream), every record carrying the worker id."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_line_formatter("worker_id"))
    handler.addFilter(_WorkerIdFilter(worker_id))
    logging.basicConfig(level=level, handlers=[handler], force=True)
