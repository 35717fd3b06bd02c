"""Offset sensors: ingestion runs for exact new offset ranges of each lake stream's topic
(`kafka_offsets_sensor` for traffic-events, and the incident and weather sensors).

The sensor never consumes the backlog (Dagster gives a tick about a minute): it plans ranges
from watermarks and the broker's time index, asks for one run per event day, and keeps the next
offset per partition in its cursor. It commits nothing to Kafka; the ingestion asset commits
after its files are durable, and the lake's files are the record of what was ingested.
"""

import hashlib
import json
from collections.abc import Callable
from datetime import date

from confluent_kafka import KafkaException
from dagster import (
    AssetsDefinition,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from resources.kafka import KafkaResource
from traffic_assets.ingestion.assets import raw_traffic_events
from traffic_assets.ingestion.context_assets import raw_traffic_incidents, raw_weather_observations
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


def run_request(day_key: str, ranges: list[OffsetRange], asset_name: str) -> RunRequest:
    described = [
        {"topic": r.topic, "partition": r.partition, "first": r.first, "last": r.last}
        for r in sorted(ranges)
    ]
    digest = hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]
    return RunRequest(
        run_key=f"{asset_name}:{day_key}:{digest}",
        partition_key=day_key,
        run_config={"ops": {asset_name: {"config": {"ranges": described}}}},
        tags={
            "kafka/messages": str(sum(r.count for r in ranges)),
            "kafka/partitions": ",".join(str(r.partition) for r in sorted(ranges)),
        },
    )


def offsets_sensor(
    name: str, asset: AssetsDefinition, topic_of: Callable[[KafkaResource], str]
) -> SensorDefinition:
    """A sensor requesting runs of `asset` for new offset ranges of the topic `topic_of` names
    in the Kafka resource: one run per event day, the next offset per partition in its cursor."""

    @sensor(
        name=name,
        target=[asset],
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Requests {asset.key.to_user_string()} runs for new offset ranges of its "
        "Kafka topic.",
    )
    def offsets(
        context: SensorEvaluationContext, kafka: KafkaResource
    ) -> SensorResult | SkipReason:
        topic = topic_of(kafka)
        cursor = {int(p): o for p, o in json.loads(context.cursor or "{}").items()}
        consumer = kafka.consumer(group_id="traffic-lake-sensor")
        try:
            plan, new_cursor = plan_ingestion(
                OffsetProbe(consumer, topic), cursor, MAX_MESSAGES_PER_PARTITION
            )
        except KafkaException as exc:
            return SkipReason(f"Kafka at {kafka.bootstrap_servers} did not answer: {exc}")
        finally:
            consumer.close()
        if not plan:
            return SkipReason(f"no new records on {topic}")
        by_key: dict[str, list[OffsetRange]] = {}
        for day, ranges in plan.items():
            by_key.setdefault(_partition_key(day, context), []).extend(ranges)
        requests = [
            run_request(key, ranges, asset.key.to_user_string())
            for key, ranges in sorted(by_key.items())
        ]
        context.log.info(
            "requesting %d runs for %d messages of %s",
            len(requests),
            sum(r.count for ranges in plan.values() for r in ranges),
            topic,
        )
        return SensorResult(
            run_requests=requests,
            cursor=json.dumps({str(p): o for p, o in sorted(new_cursor.items())}),
        )

    return offsets


kafka_offsets_sensor = offsets_sensor(
    "kafka_offsets_sensor", raw_traffic_events, lambda kafka: kafka.events_topic
)
incidents_offsets_sensor = offsets_sensor(
    "incidents_offsets_sensor", raw_traffic_incidents, lambda kafka: kafka.incidents_topic
)
weather_offsets_sensor = offsets_sensor(
    "weather_offsets_sensor", raw_weather_observations, lambda kafka: kafka.weather_topic
)
