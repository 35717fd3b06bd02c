"""Replay a speed dataset into Kafka: `python -m traffic_core.ingestion.producer --data FILE`.

Readings are keyed by sensor id (so one sensor's readings stay ordered in one partition) and
stamped with their event time as the Kafka timestamp (so consumers can seek by time). Missing
readings travel as an explicit null speed, never as 0 mph. Values no detector can report
(negative, above the validation limit, infinite) go to the dead-letter topic with a reason.
The producer is idempotent: a broker restart mid-replay neither loses nor duplicates readings.
Every replay has an ingest id (`ingest-<UTC start>-<6 hex>` or `--ingest-id`) carried in each
reading's `ingest_id` field, so the lake, Dagster and the API can name the replay behind any row
(a field, not a Kafka header: the constant column is encoded once per block, a header per
record would cost about half the producer's time).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient
from tqdm import tqdm

from traffic_core.datasets import load_speeds
from traffic_core.events import INCIDENT, WEATHER, EventCodec, Reason, ValidationConfig
from traffic_core.events.codec import Categorical, Doubles
from traffic_core.ingestion.ingest_ids import new_ingest_id
from traffic_core.json_logs import json_line_formatter
from traffic_core.kafka.client_config import kafka_client_config
from traffic_core.kafka.offsets import newest_timestamp
from traffic_core.kafka.topics import (
    TRAFFIC_EVENTS,
    TRAFFIC_EVENTS_DLQ,
    TRAFFIC_INCIDENTS,
    WEATHER_OBSERVATIONS,
)
from traffic_core.settings import KafkaSettings

STEP_SECONDS = 300.0
ENCODE_STEPS = 256  # steps encoded at once (~53k METR-LA readings): amortises numpy's overhead
SEVERITY_LEVELS = (0.25, "MINOR"), (0.5, "MODERATE"), (0.75, "MAJOR"), (float("inf"), "SEVERE")

log = logging.getLogger("traffic_core.ingestion.producer")


@dataclass
class ReplaySummary:
    ingest_id: str | None = None
    events: int = 0
    missing: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    incidents: int = 0
    weather: int = 0
    delivery_failures: int = 0
    seconds: float = 0.0
    first_time: datetime | None = None
    last_time: datetime | None = None

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        rejected = sum(self.rejected.values())
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        return (
            f"ingest_id={self.ingest_id} events={self.events} "
            f"(missing readings={self.missing}) rejected={rejected} [{reasons}] "
            f"incidents={self.incidents} weather={self.weather} "
            f"delivery_failures={self.delivery_failures} seconds={self.seconds:.1f} "
            f"events/s={self.events_per_second:,.0f} "
            f"range={self.first_time} .. {self.last_time}"
        )


class ReadingProducer:
    """An idempotent, batching producer for readings plus their dead-letter topic."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = TRAFFIC_EVENTS,
        dlq_topic: str = TRAFFIC_EVENTS_DLQ,
        **overrides: Any,
    ) -> None:
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.failures = 0
        self.producer = Producer(
            {
                **kafka_client_config(bootstrap_servers, "traffic-producer"),
                "client.id": "metr-traffic-producer",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 20,
                "compression.type": "lz4",
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 500_000,
                "queue.buffering.max.kbytes": 512 * 1024,
                # Ride out a broker restart: retry for up to ten minutes before failing.
                "message.timeout.ms": 600_000,
                "delivery.report.only.error": True,
                "on_delivery": self._on_delivery,
                **overrides,
            }
        )

    def _on_delivery(self, error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            self.failures += 1

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        timestamp_ms: int,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, timestamp=timestamp_ms, headers=headers)
                return
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.05)

    def send_row(self, values: list[bytes], keys: list[bytes], timestamp_ms: int) -> None:
        """Send one step's readings to the readings topic (empty values are skipped), then
        serve delivery reports."""
        produce = self.producer.produce
        for value, key in zip(values, keys, strict=True):
            if not value:
                continue
            try:
                # Positional (topic, value, key, partition, callback, on_delivery, timestamp):
                # partition -1 lets the partitioner choose and None callbacks leave delivery
                # reports to the producer's own; parsing keywords costs as much as the produce.
                produce(self.topic, value, key, -1, None, None, timestamp_ms)
            except BufferError:
                self.send(self.topic, value, key, timestamp_ms)
        self.producer.poll(0)

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self, timeout: float = 600.0) -> int:
        """Wait for every message; returns how many are still undelivered."""
        return self.producer.flush(timeout)


def _epoch_ms(index: pd.DatetimeIndex) -> np.ndarray:
    stamps = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return stamps.as_unit("ms").asi8


def replay_speeds(
    speeds: pd.DataFrame,
    sink: ReadingProducer,
    *,
    source: str,
    is_synthetic: bool,
    speedup: float | None = None,
    start_from: pd.Timestamp | None = None,
    limits: ValidationConfig | None = None,
    progress: bool = False,
    ingest_id: str | None = None,
) -> ReplaySummary:
    """Send every cell of a wide speed frame (index time, columns sensors, NaN = missing).

    speedup None replays as fast as possible; N replays N times faster than real time.
    start_from skips earlier rows, so an interrupted replay can resume where it stopped.
    ingest_id goes into every reading (None: a new one); the summary names it.
    """
    limits = limits or ValidationConfig()
    if start_from is not None:
        speeds = speeds.loc[speeds.index >= start_from]
    summary = ReplaySummary(ingest_id or new_ingest_id())
    if speeds.empty:
        return summary
    codec = EventCodec()
    sensors = [str(c) for c in speeds.columns]
    keys = [s.encode() for s in sensors]
    values = speeds.to_numpy(dtype=np.float64)
    times_ms = _epoch_ms(pd.DatetimeIndex(speeds.index)).tolist()
    missing = np.isnan(values)
    bad = ~missing & ((values < 0) | (values > limits.max_speed_mph) | ~np.isfinite(values))
    started = time.perf_counter()
    constants = {"source": source, "is_synthetic": is_synthetic, "ingest_id": summary.ingest_id}
    rows = _encoded_rows(codec, sensors, times_ms, values, constants)
    steps = tqdm(rows, total=len(values), unit="step", disable=not progress, file=sys.stderr)
    for i, row in steps:
        for j in np.flatnonzero(bad[i]).tolist():
            reason = _limit_reason(values[i, j])
            summary.rejected[reason] += 1
            header: list[tuple[str, str | bytes | None]] = [
                ("dlq.reason", reason.encode()),
                ("dlq.detail", f"speed {values[i, j]}".encode()),
            ]
            sink.send(sink.dlq_topic, row[j], keys[j], times_ms[i], header)
            row[j] = b""
        sink.send_row(row, keys, times_ms[i])
        summary.events += len(sensors) - int(bad[i].sum())
        summary.missing += int(missing[i].sum())
        if speedup:
            _sleep_until(started + (i + 1) * STEP_SECONDS / speedup)
        if progress and i % 50 == 0:
            steps.set_postfix(events=summary.events, refresh=False)
    summary.first_time = speeds.index[0].to_pydatetime()
    summary.last_time = speeds.index[-1].to_pydatetime()
    summary.delivery_failures = sink.flush() + sink.failures
    summary.seconds = time.perf_counter() - started
    return summary


def _encoded_rows(
    codec: EventCodec,
    sensors: list[str],
    times_ms: list[int],
    speeds: np.ndarray,
    constants: dict[str, Any],
) -> Iterator[tuple[int, list[bytes]]]:
    """(step, its messages sensor by sensor), encoded column-wise a block of steps at a time.

    NaN speeds travel as null; `constants` are fields equal for every reading (encoded once).
    """
    width = len(sensors)
    for first in range(0, len(speeds), ENCODE_STEPS):
        block = speeds[first : first + ENCODE_STEPS]
        encoded = codec.encode_columns(
            {
                "sensor_id": Categorical(sensors, np.tile(np.arange(width), len(block))),
                "event_time": Categorical(
                    times_ms[first : first + len(block)], np.repeat(np.arange(len(block)), width)
                ),
                "speed_mph": Doubles(block.ravel(), np.isnan(block).ravel()),
                **constants,
            }
        )
        for k in range(len(block)):
            yield first + k, encoded[k * width : (k + 1) * width]


def _limit_reason(value: float) -> str:
    if value < 0:
        return Reason.NEGATIVE_SPEED.value
    return Reason.SPEED_TOO_HIGH.value


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def severity_level(score: float) -> str:
    """The simulator scores severity in [0, 1]; the incident contract uses named levels."""
    return next(name for bound, name in SEVERITY_LEVELS if score < bound)


def replay_incidents(incidents: pd.DataFrame, sink: ReadingProducer) -> int:
    """Send simulator incident reports (incident_id, sensor_id, start, end, severity, ...)."""
    codec = EventCodec(INCIDENT)
    for row in incidents.itertuples(index=False):
        start = pd.Timestamp(row.start).tz_localize("UTC").to_pydatetime()
        record = {
            "incident_id": row.incident_id,
            "sensor_id": str(row.sensor_id),
            "start_time": start,
            "end_time": pd.Timestamp(row.end).tz_localize("UTC").to_pydatetime(),
            "severity": severity_level(float(row.severity)),
            "affected_sensors": [str(s) for s in row.affected_sensors],
            "source": str(row.source),
            "is_synthetic": str(row.source) == "synthetic",
        }
        sink.send(
            TRAFFIC_INCIDENTS,
            codec.encode(record),
            row.incident_id.encode(),
            int(start.timestamp() * 1000),
        )
    return len(incidents)


def replay_weather(path: Path, sink: ReadingProducer, source: str = "weather-csv") -> int:
    """Send a weather CSV (station_id, observed_at, temperature_c, precipitation_mm,
    visibility_km) to its own topic."""
    frame = pd.read_csv(path)
    required = {"station_id", "observed_at"}
    if not required <= set(frame.columns):
        raise ValueError(f"{path}: weather CSV needs columns {sorted(required)}")
    codec = EventCodec(WEATHER)
    observed = pd.to_datetime(frame["observed_at"], utc=True)
    for i, row in enumerate(frame.to_dict("records")):
        record = {
            "station_id": str(row["station_id"]),
            "observed_at": observed.iloc[i].to_pydatetime(),
            **{
                k: _optional(row.get(k))
                for k in ("temperature_c", "precipitation_mm", "visibility_km")
            },
            # a simulator's CSV says it is synthetic (and its source); others are real
            "source": str(row.get("source", source)),
            "is_synthetic": bool(row.get("is_synthetic", False)),
        }
        sink.send(
            WEATHER_OBSERVATIONS,
            codec.encode(record),
            record["station_id"].encode(),
            int(observed.iloc[i].timestamp() * 1000),
        )
    return len(frame)


def _optional(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m traffic_core.ingestion.producer", description=__doc__
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="metr-la.h5, the CSV form, or Parquet (simulator output)",
    )
    parser.add_argument(
        "--start",
        default=None,
        help="time of the first row for a CSV without timestamps (default 2012-03-01 00:00)",
    )
    parser.add_argument(
        "--from", dest="start_from", default=None, help="resume: skip readings before this time"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="start at the newest event time the topic already holds (a rerun resends at most "
        "that one step, which every reader deduplicates) instead of replaying it all again",
    )
    parser.add_argument("--until", default=None, help="stop after the readings at this time")
    parser.add_argument(
        "--speedup",
        type=float,
        default=None,
        help="replay N times faster than real time (default: as fast as possible)",
    )
    parser.add_argument("--incidents", type=Path, default=None, help="incident reports parquet")
    parser.add_argument("--weather", type=Path, default=None, help="weather observations CSV")
    parser.add_argument("--bootstrap-servers", default=KafkaSettings().bootstrap_servers)
    parser.add_argument("--topic", default=TRAFFIC_EVENTS)
    parser.add_argument("--source", default="metr-la", help="source label of real data")
    parser.add_argument(
        "--ingest-id",
        default=None,
        help="id stamped on every reading of this replay (default: ingest-<UTC now>-<6 hex>)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    _log_json_lines()
    ingest_id = args.ingest_id or new_ingest_id()

    speeds = load_speeds(args.data, start=args.start)
    if args.until:
        speeds = speeds.loc[speeds.index <= pd.Timestamp(args.until)]
    synthetic = bool(speeds.attrs.get("synthetic"))
    source = "synthetic" if synthetic else args.source
    start_from = pd.Timestamp(args.start_from) if args.start_from else None
    if args.resume:
        start_from = resume_point(args.bootstrap_servers, args.topic, start_from)
        if start_from is not None and start_from > speeds.index[-1]:
            print(
                f"nothing to replay: {args.topic} already holds readings up to {start_from}, "
                f"after the data's last ({speeds.index[-1]})",
                file=sys.stderr,
            )
            return 0
    sink = ReadingProducer(args.bootstrap_servers, topic=args.topic)
    label = "SYNTHETIC " if synthetic else ""
    print(
        f"replaying {label}{speeds.shape[0]} steps x {speeds.shape[1]} sensors from "
        f"{args.data} to {args.topic} at {args.bootstrap_servers} as ingest id {ingest_id}",
        file=sys.stderr,
    )
    log.info(
        "replay started",
        extra={
            "ingest_id": ingest_id,
            "data": str(args.data),
            "topic": args.topic,
            "steps": speeds.shape[0],
            "sensors": speeds.shape[1],
            "synthetic": synthetic,
        },
    )
    summary = replay_speeds(
        speeds,
        sink,
        source=source,
        is_synthetic=synthetic,
        speedup=args.speedup,
        start_from=start_from,
        progress=not args.no_progress,
        ingest_id=ingest_id,
    )
    if args.incidents:
        summary.incidents = replay_incidents(pd.read_parquet(args.incidents), sink)
    if args.weather:
        summary.weather = replay_weather(args.weather, sink)
    summary.delivery_failures += sink.flush()
    print(f"summary: {summary.describe()}")
    log.info(
        "replay finished",
        extra={
            "ingest_id": ingest_id,
            "topic": args.topic,
            "events": summary.events,
            "rejected": dict(summary.rejected),
            "delivery_failures": summary.delivery_failures,
            "first_time": str(summary.first_time),
            "last_time": str(summary.last_time),
        },
    )
    return 1 if summary.delivery_failures else 0


def resume_point(
    bootstrap_servers: str, topic: str, start_from: pd.Timestamp | None
) -> pd.Timestamp | None:
    """Where a resumed replay starts: the newest event time in the topic (naive UTC, like the
    datasets' index) or `start_from` if that is later; None for an empty topic."""
    admin = AdminClient(kafka_client_config(bootstrap_servers, "traffic-producer"))
    newest = newest_timestamp(admin, topic)
    if newest is None:
        return start_from
    resume = pd.Timestamp(newest).tz_convert(None)
    return resume if start_from is None else max(resume, start_from)


def _log_json_lines() -> None:
    """The replay's start and end as JSON lines on stderr, for log search by ingest id."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_line_formatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


if __name__ == "__main__":
    raise SystemExit(main())
