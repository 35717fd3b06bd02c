"""Prometheus metrics of a stream processor instance, and the poller that measures what the
processing loop cannot see: the group's committed lag and the local state's size.

Counters count what this instance processed; after a kill, a restarted or surviving instance
processes the uncommitted part again, so they may exceed what consumers read (which is
exactly once).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from traffic_core.kafka.offsets import group_positions, lag_of

LOG = logging.getLogger(__name__)


class StreamMetrics:
    """One registry per instance, so several instances (or tests) in one process never clash."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.readings = Counter(
            "traffic_stream_readings", "Valid readings added to a window", registry=r
        )
        self.windows = Counter(
            "traffic_stream_windows_emitted",
            "Closed (sensor, 5-minute window) aggregates produced to the aggregates topic",
            registry=r,
        )
        self.late = Counter(
            "traffic_stream_late_readings",
            "Readings for a window already closed (end + grace), sent to the DLQ",
            registry=r,
        )
        self.rejected = Counter(
            "traffic_stream_rejected",
            "Messages sent to the dead-letter topic, by reason (LATE_READING included)",
            ["reason"],
            registry=r,
        )
        self.last_window_end = Gauge(
            "traffic_stream_last_window_end_timestamp_seconds",
            "Event time (Unix) of the end of the newest window emitted",
            registry=r,
        )
        self.lag = Gauge(
            "traffic_stream_consumer_lag",
            "Messages of the readings topic after the group's committed offset, per partition",
            ["partition"],
            registry=r,
        )
        self.state_bytes = Gauge(
            "traffic_stream_state_bytes",
            "Bytes of this instance's local state stores (RocksDB)",
            registry=r,
        )
        self.commit_seconds = Histogram(
            "traffic_stream_commit_seconds",
            "Time to commit one checkpoint: flush, changelog, offsets and the Kafka transaction",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose /metrics on a daemon thread (port 0: not at all)."""
        if port:
            start_http_server(port, addr=host, registry=self.registry)


def directory_bytes(root: Path) -> int:
    """Total size of the files under root (0 if absent); files may vanish while walking."""
    total = 0
    for path in root.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue
    return total


class GroupPoller(threading.Thread):
    """Every `interval` seconds: lag = high watermark - committed offset per partition of the
    readings topic (what a restart would re-read), and the state folder's size."""

    def __init__(
        self,
        metrics: StreamMetrics,
        connection: dict[str, Any],
        group_id: str,
        topic: str,
        state_dir: Path,
        interval: float = 5.0,
    ) -> None:
        super().__init__(name="stream-metrics-poller", daemon=True)
        self.metrics = metrics
        self.connection = connection
        self.group_id = group_id
        self.topic = topic
        self.state_dir = state_dir
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        consumer = Consumer(
            {
                **self.connection,
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "client.id": f"{self.group_id}-lag",
            }
        )
        try:
            while not self._stop_event.wait(self.interval):
                self.poll_once(consumer)
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stop_event.set()

    def poll_once(self, consumer: Consumer) -> None:
        self.metrics.state_bytes.set(directory_bytes(self.state_dir))
        try:
            positions = group_positions(consumer, self.topic)
        except (KafkaException, TimeoutError) as exc:  # the next poll tries again
            LOG.warning("lag not measured", extra={"error": str(exc)})
            return
        for partition, lag in lag_of(positions).items():
            self.metrics.lag.labels(str(partition)).set(lag)
