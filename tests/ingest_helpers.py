"""Dagster-side helpers for tests of the Kafka -> lake path: a sensor tick and its runs."""

from __future__ import annotations

import hashlib
from datetime import datetime

import pandas as pd
from confluent_kafka import Message
from dagster import (
    AssetsDefinition,
    DagsterInstance,
    Definitions,
    SensorDefinition,
    SensorEvaluationContext,
    build_sensor_context,
    materialize,
)

from resources import KafkaResource, LakeResource
from resources.network import NetworkResource
from sensors.kafka_offsets import kafka_offsets_sensor
from traffic_assets.ingestion.assets import raw_traffic_events
from traffic_assets.reference.sensor_graph import sensor_graph
from traffic_core.lake import raw_files, read_raw_day
from traffic_core.lake_storage import LakePath, read_parquet


def lake_frame(lake: LakePath) -> pd.DataFrame:
    days = sorted({p.parent.parent.parent.name.removeprefix("date=") for p in raw_files(lake)})
    return pd.concat(
        [read_raw_day(lake, datetime.fromisoformat(d).date()) for d in days], ignore_index=True
    )


def sensor_context(
    instance: DagsterInstance,
    kafka: KafkaResource,
    lake: LakeResource,
    cursor: str | None,
    asset: AssetsDefinition = raw_traffic_events,
    sensor: SensorDefinition = kafka_offsets_sensor,
) -> SensorEvaluationContext:
    definitions = Definitions(
        assets=[sensor_graph, asset],
        sensors=[sensor],
        resources={"kafka": kafka, "lake": lake, "network": NetworkResource()},
    )
    return build_sensor_context(
        instance=instance, cursor=cursor, resources={"kafka": kafka}, definitions=definitions
    )


def run_sensor_tick(
    instance: DagsterInstance,
    kafka: KafkaResource,
    lake: LakeResource,
    cursor: str | None,
    asset: AssetsDefinition = raw_traffic_events,
    sensor: SensorDefinition = kafka_offsets_sensor,
) -> str | None:
    """One sensor evaluation, then every run it asked for, as the daemon would launch them."""
    context = sensor_context(instance, kafka, lake, cursor, asset, sensor)
    result = sensor.evaluate_tick(context)
    for request in result.run_requests or []:
        outcome = materialize(
            [asset],
            partition_key=request.partition_key,
            run_config=request.run_config,
            resources={"kafka": kafka, "lake": lake, "network": NetworkResource()},
            instance=instance,
            tags=request.tags,
        )
        assert outcome.success
    return result.cursor


def file_digests(lake: LakePath) -> dict[str, str]:
    """SHA-256 of every raw file, by its path under the lake root."""
    return {
        str(p.relative_to(lake)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in raw_files(lake)
    }


def lake_offsets(lake: LakePath) -> list[tuple[int, int]]:
    """(partition, offset) of every stored row, duplicates included."""
    out: list[tuple[int, int]] = []
    for path in raw_files(lake):
        table = read_parquet(path, columns=["kafka_partition", "kafka_offset"])
        out += zip(
            table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist(), strict=True
        )
    return out


def dlq_sources(messages: list[Message]) -> list[tuple[int, int]]:
    sources = []
    for message in messages:
        headers = {k: v.decode() for k, v in message.headers() or []}
        sources.append((int(headers["dlq.source.partition"]), int(headers["dlq.source.offset"])))
    return sources
