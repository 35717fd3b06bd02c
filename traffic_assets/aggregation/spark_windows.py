"""Spark implementation of `traffic_core.windows`: the same dedup, window, flag and class rules.

Every number and label comes from the core module, so the two cannot drift apart silently; a
test compares both on the real METR-LA days.
"""

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from traffic_core import windows as core

WINDOW_MICROS = core.WINDOW // pd.Timedelta(microseconds=1)


def read_raw(spark: SparkSession, paths: str | Path | Sequence[str | Path]) -> DataFrame:
    """Raw reading files, or folders searched recursively for them (e.g. a day of the raw zone);
    NaN speeds become null so they count as missing exactly as in pandas."""
    targets = [paths] if isinstance(paths, str | Path) else list(paths)
    if not targets:
        raise ValueError("no raw files or folders given")
    raw = (
        spark.read.option("recursiveFileLookup", "true")
        .option("pathGlobFilter", "offsets=*.parquet")
        .parquet(*(str(p) for p in targets))
    )
    speed = F.col("speed_mph").cast("double")
    return raw.select(
        F.col("sensor_id").cast("string").alias("sensor_id"),
        "event_time",
        F.when(F.isnan(speed), None).otherwise(speed).alias("speed_mph"),
        "kafka_offset",
    )


def window_start(event_time: Column) -> Column:
    """Floor to the core WINDOW on the UTC epoch, as pandas' `dt.floor` does."""
    micros = F.unix_micros(event_time)
    return F.timestamp_micros(micros - F.pmod(micros, F.lit(WINDOW_MICROS)))


def aggregate_with_spark(
    spark: SparkSession,
    raw_paths_or_dir: str | Path | Sequence[str | Path],
    thresholds: core.CongestionThresholds = core.DEFAULT_THRESHOLDS,
) -> DataFrame:
    """`core.AGGREGATE_COLUMNS` per (sensor_id, window_start), as `core.aggregate_windows`."""
    unique = (
        read_raw(spark, raw_paths_or_dir)
        .groupBy("sensor_id", "event_time")
        .agg(F.max_by("speed_mph", "kafka_offset").alias("speed_mph"))
    )
    speed = F.col("speed_mph")
    windows = unique.groupBy("sensor_id", window_start(F.col("event_time")).alias("window_start"))
    out = windows.agg(
        F.avg(speed).alias("speed_mean"),
        F.min(speed).alias("speed_min"),
        F.max(speed).alias("speed_max"),
        F.stddev_samp(speed).alias("speed_std"),
        F.count(F.lit(1)).alias("reading_count"),
        F.count(speed).alias("valid_count"),
    ).withColumn(
        "share_missing",
        (F.col("reading_count") - F.col("valid_count")) / F.col("reading_count"),
    )
    return out.select(
        *(c for c in core.AGGREGATE_COLUMNS if c not in {"quality_flag", "congestion"}),
        quality_flag().alias("quality_flag"),
        congestion(F.col("speed_mean"), thresholds).alias("congestion"),
    )


def quality_flag() -> Column:
    """`core.quality_flags` over the aggregate columns; a null std never makes a window suspect."""
    valid = F.col("valid_count")
    flatline = (valid >= core.FLATLINE_MIN_READINGS) & (F.col("speed_min") == F.col("speed_max"))
    noisy = F.col("speed_std") > core.SUSPECT_STD_MPH
    return (
        F.when(valid == 0, core.MISSING)
        .when(noisy | flatline, core.SUSPECT)
        .when(F.col("share_missing") > 0, core.PARTIAL)
        .otherwise(core.OK)
    )


def congestion(speed: Column, thresholds: core.CongestionThresholds) -> Column:
    """`CongestionThresholds.classify` as a column expression."""
    return (
        F.when(speed.isNull(), core.UNKNOWN)
        .when(speed < thresholds.severe_below, core.SEVERE)
        .when(speed < thresholds.free_flow_from, core.CONGESTED)
        .otherwise(core.FREE_FLOW)
    )
