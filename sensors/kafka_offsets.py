"""`kafka_offsets_sensor`: requests ingestion runs for exact new offset ranges of traffic-events.

The sensor never consumes the backlog (Dagster gives a tick about a minute): it plans ranges
from watermarks and the broker's time index, asks for one run per event day, and keeps the next
offset per partition in its cursor. It commits nothing to Kafka; the ingestion asset commits
after its files are durable, and the lake's files are the record of what was ingested.
"""

import hashlib
import json
from datetime import date

from confluent_kafka import KafkaException
from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from resources.kafka import KafkaResource
from traffic_assets.ingestion.assets import raw_traffic_events
from traffic_assets.partitions import daily_partitions
from traffic_core.ingestion.offset_planner import OffsetProbe, plan_ingestion
from traffic_core.lake import OffsetRange

MAX_MESSAGES_PER_PARTITION = 250_000
"""Bounds one tick's work: ~10 days of METR-LA per partition of 12."""


def _partition_key(day: date, context: SensorEvaluationContext) -> str:
    """The day's partition; days outside the partition set go to the nearest one, whose run
    still validates every reading (far-future ones are rejected to the DLQ there)."""
    keys = daily_partitions.get_partition_keys(dynamic_partitions_store=context.instance)
    key = day.isoformat()
    return min(max(key, keys[0]), keys[-1])


def run_request(day_key: str, ranges: list[OffsetRange]) -> RunRequest:
    described = [
        {"topic": r.topic, "partition": r.partition, "first": r.first, "last": r.last}
        for r in sorted(ranges)
    ]
    digest = hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]
    return RunRequest(
        run_key=f"raw_traffic_events:{day_key}:{digest}",
        partition_key=day_key,
        run_config={"ops": {"raw_traffic_events": {"config": {"ranges": described}}}},
        tags={
            "kafka/messages": str(sum(r.count for r in ranges)),
            "kafka/partitions": ",".join(str(r.partition) for r in sorted(ranges)),
        },
    )


@sensor(
    target=[raw_traffic_events],
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Requests raw_traffic_events runs for new offset ranges of traffic-events.",
)
def kafka_offsets_sensor(
    context: SensorEvaluationContext, kafka: KafkaResource
) -> SensorResult | SkipReason:
    cursor = {int(p): o for p, o in json.loads(context.cursor or "{}").items()}
    consumer = kafka.consumer(group_id="traffic-lake-sensor")
    try:
        plan, new_cursor = plan_ingestion(
            OffsetProbe(consumer, kafka.events_topic), cursor, MAX_MESSAGES_PER_PARTITION
        )
    except KafkaException as exc:
        return SkipReason(f"Kafka at {kafka.bootstrap_servers} did not answer: {exc}")
    finally:
        consumer.close()
    if not plan:
        return SkipReason(f"no new readings on {kafka.events_topic}")
    by_key: dict[str, list[OffsetRange]] = {}
    for day, ranges in plan.items():
        by_key.setdefault(_partition_key(day, context), []).extend(ranges)
    requests = [run_request(key, ranges) for key, ranges in sorted(by_key.items())]
    context.log.info(
        "requesting %d runs for %d messages",
        len(requests),
        sum(r.count for ranges in plan.values() for r in ranges),
    )
    return SensorResult(
        run_requests=requests,
        cursor=json.dumps({str(p): o for p, o in sorted(new_cursor.items())}),
    )
