"""Data-quality checks on each daily partition of `traffic_5min_aggregates`.

The speed range blocks (an impossible aggregate fails its run). Window completeness fails for a
day still streaming in, so it does not fail the run; training leaves out any day whose latest
aggregates failed either check (`traffic_assets.models.complete_days`). A high missing share is a
warning: real days have outages, and the models are trained for them.
"""

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    asset_check,
)

from resources.lake import LakeResource
from resources.network import NetworkResource
from traffic_assets.aggregation.assets import traffic_5min_aggregates
from traffic_assets.partitions import daily_partitions
from traffic_core.events.validation import ValidationConfig
from traffic_core.windows import WINDOWS_PER_DAY

MIN_COVERAGE = 0.99
"""Share of (sensor, window) cells a finished day must hold; a few lost messages are tolerable."""

MAX_SHARE_MISSING = 0.10
"""METR-LA reports ~8% missing readings over its four months; clearly more means a problem."""


def _load(context: AssetCheckExecutionContext, lake: LakeResource) -> pd.DataFrame | None:
    path = lake.aggregates_file(context.partition_key)
    return pd.read_parquet(path) if path.is_file() else None


def _not_materialized(context: AssetCheckExecutionContext) -> AssetCheckResult:
    return AssetCheckResult(
        passed=False, description=f"no aggregates file for partition {context.partition_key}"
    )


@asset_check(
    asset=traffic_5min_aggregates,
    partitions_def=daily_partitions,
    blocking=False,
    description=(
        f"At least {MIN_COVERAGE:.0%} of {WINDOWS_PER_DAY} windows x sensors have a row; sensors "
        "are the reference network when sensor_graph is materialized, else those seen that day."
    ),
)
def windows_complete(
    context: AssetCheckExecutionContext, lake: LakeResource, network: NetworkResource
) -> AssetCheckResult:
    table = _load(context, lake)
    if table is None:
        return _not_materialized(context)
    seen = set(table["sensor_id"])
    reference = network.known_sensor_ids(lake.path())
    expected_sensors = reference if reference is not None else seen
    expected = WINDOWS_PER_DAY * len(expected_sensors)
    present = int(table["sensor_id"].isin(expected_sensors).sum())
    coverage = present / expected if expected else 0.0
    return AssetCheckResult(
        passed=coverage >= MIN_COVERAGE,
        metadata={
            "coverage": coverage,
            "present_cells": present,
            "expected_cells": expected,
            "expected_sensors": len(expected_sensors),
            "sensors_seen": len(seen),
            "sensors_absent": len(expected_sensors - seen),
            "unknown_sensors": len(seen - expected_sensors),
            "sensor_source": "reference" if reference is not None else "observed",
        },
    )


@asset_check(
    asset=traffic_5min_aggregates,
    partitions_def=daily_partitions,
    blocking=True,
    description="Every valid speed lies in the event contract's range 0..max_speed_mph. "
    "Blocking: impossible aggregates fail their run and are never trained on.",
)
def speeds_in_range(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
    table = _load(context, lake)
    if table is None:
        return _not_materialized(context)
    limit = ValidationConfig().max_speed_mph
    outside = (table["speed_min"] < 0) | (table["speed_max"] > limit)
    return AssetCheckResult(
        passed=not outside.any(),
        metadata={
            "rows_out_of_range": int(outside.sum()),
            "min_speed_mph": float(table["speed_min"].min()),
            "max_speed_mph": float(table["speed_max"].max()),
            "limit_mph": limit,
        },
    )


@asset_check(
    asset=traffic_5min_aggregates,
    partitions_def=daily_partitions,
    blocking=False,
    description=f"Missing readings stay below {MAX_SHARE_MISSING:.0%} of the day's readings.",
)
def missing_share_low(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
    table = _load(context, lake)
    if table is None:
        return _not_materialized(context)
    readings = int(table["reading_count"].sum())
    missing = readings - int(table["valid_count"].sum())
    share = missing / readings if readings else 1.0
    return AssetCheckResult(
        passed=share <= MAX_SHARE_MISSING,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "share_missing": share,
            "threshold": MAX_SHARE_MISSING,
            "missing_readings": missing,
            "readings": readings,
            "windows_without_speed": int((table["valid_count"] == 0).sum()),
            "sensors_all_missing": int(
                (table.groupby("sensor_id")["valid_count"].sum() == 0).sum()
            ),
        },
    )
