"""`python -m traffic_core.streams`: one instance of the 5-minute aggregation stream processor.

Start several (distinct --instance-id) to share the readings partitions; SIGTERM or Ctrl-C
commits and leaves the group.
"""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path

from traffic_core.ingestion.config import add_sensor_catalogue_flag, command_line_rules
from traffic_core.ingestion.group_metrics import configure_worker_logging
from traffic_core.kafka.topics import TRAFFIC_AGGREGATES, TRAFFIC_EVENTS, TRAFFIC_EVENTS_DLQ
from traffic_core.settings import ingestion_settings, kafka_settings, platform_settings
from traffic_core.streams.metrics import StreamMetrics
from traffic_core.streams.processor import ProcessorSettings, StreamProcessor
from traffic_core.streams.settings import StreamSettings

LOG = logging.getLogger("traffic_core.streams")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    stream, kafka = StreamSettings(), kafka_settings()
    parser = argparse.ArgumentParser(
        prog="python -m traffic_core.streams",
        description="Aggregate the readings topic into 5-minute windows per sensor, exactly once.",
    )
    parser.add_argument("--bootstrap-servers", default=kafka.bootstrap_servers)
    parser.add_argument("--events-topic", default=TRAFFIC_EVENTS)
    parser.add_argument("--aggregates-topic", default=TRAFFIC_AGGREGATES)
    parser.add_argument("--dlq-topic", default=TRAFFIC_EVENTS_DLQ)
    parser.add_argument("--group-id", default=stream.group_id)
    parser.add_argument("--instance-id", default=socket.gethostname())
    parser.add_argument("--grace-seconds", type=float, default=stream.grace_seconds)
    parser.add_argument("--commit-interval", type=float, default=stream.commit_interval_seconds)
    parser.add_argument("--state-dir", type=Path, default=stream.state_dir)
    parser.add_argument("--transaction-timeout-ms", type=int, default=stream.transaction_timeout_ms)
    parser.add_argument("--session-timeout-ms", type=int, default=stream.session_timeout_ms)
    parser.add_argument("--metrics-port", type=int, default=stream.metrics_port, help="0: none")
    parser.add_argument("--metrics-host", default=stream.metrics_host)
    add_sensor_catalogue_flag(parser)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_worker_logging(args.instance_id, args.log_level)
    ingestion = ingestion_settings()
    metrics = StreamMetrics()
    metrics.serve(args.metrics_port, args.metrics_host)
    processor = StreamProcessor(
        ProcessorSettings(
            bootstrap_servers=args.bootstrap_servers,
            state_dir=args.state_dir,
            events_topic=args.events_topic,
            aggregates_topic=args.aggregates_topic,
            dlq_topic=args.dlq_topic,
            group_id=args.group_id,
            instance_id=args.instance_id,
            grace_ms=round(args.grace_seconds * 1000),
            commit_interval=args.commit_interval,
            transaction_timeout_ms=args.transaction_timeout_ms,
            session_timeout_ms=args.session_timeout_ms,
            dlq_max_record_bytes=ingestion.dlq_max_record_bytes,
        ),
        command_line_rules(args.no_sensor_catalogue, platform_settings().lake_dir, ingestion),
        metrics,
    )
    LOG.info("starting", extra={"group": args.group_id, "topic": args.events_topic})
    processor.run()


if __name__ == "__main__":
    main()
