"""Daily partitions of 5-minute aggregates per sensor, computed by Spark from the raw zone.

A day without raw files fails the run with a message naming the folder: an empty partition would
look like a day of silent detectors and flow into features and training unnoticed.

The ingest ids of the raw rows (the producer replays behind the day) are counted from the raw
files' dictionary-encoded `ingest_id` column by the driver, not by a Spark job: Spark takes one
file's schema, and raw files written before the column existed lack it.

Automation (`automation.py`): any day, each time raw readings of it land after the tick that
last requested it, once no run of that raw day (as Dagster tracks it) or of the day goes on.
"""

import shutil
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame

from resources.lake import LakeResource
from traffic_assets.aggregation.automation import AGGREGATE_AFTER_RAW_CHANGES
from traffic_assets.aggregation.spark_windows import aggregate_with_spark
from traffic_assets.partitions import daily_partitions
from traffic_core import windows as core
from traffic_core.durable import replace_durably
from traffic_core.lake import (
    ingest_id_counts,
    ingest_id_list,
    raw_day_dir,
    raw_files,
)
from traffic_core.lake_storage import LakePath, lake_url


@asset(
    deps=[AssetKey("raw_traffic_events")],
    partitions_def=daily_partitions,
    automation_condition=AGGREGATE_AFTER_RAW_CHANGES,
    group_name="aggregation",
    code_version="1",
    kinds={"spark", "parquet"},
    description=(
        "Per sensor and 5-minute window: mean/min/max/std speed, reading counts, share missing, "
        "quality flag and congestion class (rules in traffic_core.windows)."
    ),
)
def traffic_5min_aggregates(
    context: AssetExecutionContext, pyspark: LazyPySparkResource, lake: LakeResource
) -> MaterializeResult:
    day = context.partition_key
    files = raw_files(lake.local_path(), date.fromisoformat(day))
    if not files:
        folder = raw_day_dir(lake.local_path(), date.fromisoformat(day))
        raise Failure(
            description=(
                f"no raw readings for {day}: no offsets=*.parquet files under {folder}; "
                f"materialize raw_traffic_events for partition {day} first"
            ),
            metadata={"raw_dir": MetadataValue.path(str(folder))},
        )
    out = lake.aggregates_file(day)
    frame = aggregate_with_spark(pyspark.spark_session, [spark_url(f) for f in files])
    write_single_parquet(frame, out)
    table = pd.read_parquet(out)
    ingest_ids = ingest_id_list(ingest_id_counts(files))
    context.log.info(
        "wrote %d windows from %d raw files to %s; ingest ids %s",
        len(table),
        len(files),
        out,
        {i["ingest_id"]: i["readings"] for i in ingest_ids},
    )
    metadata = summary(table, out, raw_file_count=len(files))
    return MaterializeResult(metadata={**metadata, "ingest_ids": MetadataValue.json(ingest_ids)})


def spark_url(path: LakePath) -> str:
    """A full URL (`file://` or `hdfs://host:port`): on a cluster, a bare path could mean the
    executors' default file system rather than the lake's."""
    return lake_url(path)


def write_single_parquet(frame: DataFrame, path: Path) -> None:
    """One sorted Parquet file, swapped in atomically: Spark writes into a hidden sibling folder,
    then its single part file replaces `path`, so readers see the old or the new day, never half."""
    tmp = path.parent.parent / f".tmp-{path.parent.name}-{uuid.uuid4().hex}"
    try:
        (
            frame.coalesce(1)
            .sortWithinPartitions("sensor_id", "window_start")
            .write.parquet(spark_url(tmp), compression="zstd")
        )
        [part] = tmp.glob("part-*.parquet")
        replace_durably(part, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def summary(table: pd.DataFrame, path: Path, raw_file_count: int) -> dict[str, Any]:
    """Materialization metadata: size, coverage, data quality and congestion at a glance."""
    readings = int(table["reading_count"].sum())
    missing = readings - int(table["valid_count"].sum())
    congestion = table["congestion"].value_counts()
    flags = table["quality_flag"].value_counts()
    return {
        "dagster/row_count": len(table),
        "dagster/uri": MetadataValue.path(str(path)),
        "raw_files": raw_file_count,
        "readings": readings,
        "sensors": int(table["sensor_id"].nunique()),
        "windows": int(table["window_start"].nunique()),
        "share_missing": missing / readings if readings else 0.0,
        **{f"congestion_{c}": int(congestion.get(c, 0)) for c in core.CONGESTION_CLASSES},
        **{f"quality_{q}": int(flags.get(q, 0)) for q in core.QUALITY_FLAGS},
        "preview": MetadataValue.md(table.head(10).to_markdown(index=False)),
    }
