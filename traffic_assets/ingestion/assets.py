"""`raw_traffic_events`: readings of exact Kafka offset ranges, stored by event date."""

from datetime import date

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from resources.kafka import KafkaResource
from resources.lake import LakeResource
from resources.network import NetworkResource
from traffic_assets.partitions import daily_partitions
from traffic_core.ingestion.config import validation_config
from traffic_core.ingestion.lake_streams import READINGS_STREAM, LakeStream
from traffic_core.ingestion.ranges import IngestReport, dlq_record_budget, ingest_ranges
from traffic_core.lake import (
    OffsetRange,
    ingest_id_list,
    ordered_ids,
    raw_day_dir,
    stored_offset_ranges,
)
from traffic_core.lake_storage import LakePath
from traffic_core.settings import ingestion_settings

INGEST_GROUP = "traffic-lake-ingest"


class OffsetRangeConfig(Config):
    topic: str
    partition: int
    first: int
    last: int


class IngestConfig(Config):
    ranges: list[OffsetRangeConfig] = Field(
        default_factory=list,
        description="Exact Kafka offset ranges to ingest (the Kafka sensor fills this in). "
        "Empty: re-ingest the ranges already stored for this date.",
    )
    check_sensor_catalogue: bool = Field(
        default=True,
        description="Reject readings of sensors missing from the sensor catalogue (the "
        "sensor_graph table, else the dataset's graph files; neither: the run fails at start).",
    )


def partition_days() -> tuple[date, date]:
    """First and last day the asset has partitions for now; readings of other days go to the
    DLQ (OUTSIDE_PARTITIONS) instead of materializing a partition that does not exist."""
    keys = daily_partitions.get_partition_keys()
    return date.fromisoformat(keys[0]), date.fromisoformat(keys[-1])


def raw_stream_asset(name: str, stream: LakeStream, description: str) -> AssetsDefinition:
    """A lake stream's raw asset: daily partitions, each run ingesting exact offset ranges."""

    @asset(
        name=name,
        partitions_def=daily_partitions,
        group_name="ingestion",
        code_version="1",
        kinds={"kafka", "parquet"},
        description=description,
    )
    def raw_stream(
        context: AssetExecutionContext,
        config: IngestConfig,
        kafka: KafkaResource,
        lake: LakeResource,
        network: NetworkResource,
    ) -> MaterializeResult:
        return ingest_partition(context, config, kafka, lake, network, stream)

    return raw_stream


raw_traffic_events = raw_stream_asset(
    "raw_traffic_events",
    READINGS_STREAM,
    "Raw readings from traffic-events: one immutable Parquet file per "
    "(event date, topic, partition, offset range); rejects go to traffic-events-dlq.",
)


def ingest_partition(
    context: AssetExecutionContext,
    config: IngestConfig,
    kafka: KafkaResource,
    lake: LakeResource,
    network: NetworkResource,
    stream: LakeStream,
) -> MaterializeResult:
    """One daily partition of a stream's raw zone from the run's offset ranges (or, with none,
    the ranges already stored for the day), through the exactly-once range writer."""
    day = date.fromisoformat(context.partition_key)
    root = lake.path()
    ranges = [OffsetRange(**r.model_dump()) for r in config.ranges]
    if not ranges:
        stored = stored_offset_ranges(root, zone=stream.zone)
        ranges = [r for r in stored if _stored_for(root, day, r, stream)]
        if not ranges:
            raise ValueError(
                f"no offset ranges given and none stored for {day}: runs of this asset are "
                "requested by its Kafka offsets sensor with the ranges to ingest"
            )
    known = network.sensor_catalogue(root) if config.check_sensor_catalogue else None
    settings = ingestion_settings()
    budget = dlq_record_budget(kafka.admin(), kafka.dlq_topic, settings.dlq_max_record_bytes)
    consumer = kafka.consumer(group_id=INGEST_GROUP)
    try:
        report = ingest_ranges(
            consumer,
            kafka.producer(),
            root,
            ranges,
            validation_config(known, partition_days(), settings),
            dlq_topic=kafka.dlq_topic,
            dlq_max_record_bytes=budget,
            zone=stream.zone,
            classify=stream.classify,
        )
    finally:
        consumer.close()
    with_unknown, unknown_names = report.unknown_fields()
    if with_unknown:
        context.log.warning(
            "%d stored readings carried fields the schema lacks (UNKNOWN_FIELD, counted): %s",
            with_unknown,
            dict(unknown_names),
        )
    for other_day in sorted(set(report.rows_by_date()) - {day}):
        # Late (or early) records went to their own date; say so, so that date's
        # downstream partitions are refreshed too.
        context.log_event(
            AssetMaterialization(
                asset_key=context.asset_key,
                partition=other_day.isoformat(),
                description=f"{stream.name} of {other_day} arriving with the run for {day}",
                metadata={
                    "written_by_partition": day.isoformat(),
                    "ingest_ids": MetadataValue.json(ingest_id_list(report.ingest_ids(other_day))),
                },
            )
        )
    for outcome in report.ranges:
        context.log.info(
            "stored %s: %d %s by date and ingest id %s",
            outcome.offsets,
            outcome.accepted,
            stream.name,
            {d.isoformat(): dict(c) for d, c in sorted(outcome.ingest_ids.items())},
        )
    return MaterializeResult(metadata=_metadata(report, raw_day_dir(root, day, stream.zone), day))


def _stored_for(root: LakePath, day: date, offsets: OffsetRange, stream: LakeStream) -> bool:
    folder = raw_day_dir(root, day, stream.zone)
    return any(folder.rglob(f"offsets={offsets.first:020d}-{offsets.last:020d}*"))


def _metadata(report: IngestReport, folder: LakePath, day: date) -> dict:
    rejected = report.rejected
    messages = report.messages
    return {
        "dagster/row_count": report.accepted,
        "dagster/uri": MetadataValue.path(str(folder)),
        "messages": messages,
        "rejected": sum(rejected.values()),
        "dlq_rate": (sum(rejected.values()) / messages) if messages else 0.0,
        "rejected_by_reason": MetadataValue.json(dict(rejected)),
        "with_unknown_fields": report.unknown_fields()[0],
        "unknown_fields": MetadataValue.json(dict(report.unknown_fields()[1])),
        "ingest_ids": MetadataValue.json(ingest_id_list(report.ingest_ids(day))),
        "offset_ranges": MetadataValue.json(
            [
                {
                    "topic": o.offsets.topic,
                    "partition": o.offsets.partition,
                    "first": o.offsets.first,
                    "last": o.offsets.last,
                    "accepted": o.accepted,
                    "ingest_ids": ordered_ids(set().union(*o.ingest_ids.values())),
                }
                for o in report.ranges
            ]
        ),
        "files_by_date": MetadataValue.json(
            {d.isoformat(): len(paths) for d, paths in sorted(report.rows_by_date().items())}
        ),
    }
