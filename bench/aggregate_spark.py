"""Spark 5-minute aggregation time on the raw zone: one day cold and warm, and all days.

Writes N days of SYNTHETIC readings (207 sensors) as raw lake files, then times
`aggregate_with_spark` (count of output windows forces the whole job). Prints one JSON line.

    .venv/bin/python bench/aggregate_spark.py --days 28
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

from resources.spark import spark_config
from traffic_assets.aggregation.spark_windows import aggregate_with_spark
from traffic_core.lake import OffsetRange, raw_day_dir, write_raw_range
from traffic_core.settings import LOCAL_STATE_DIR, SparkSettings
from traffic_core.simulator import simulate
from traffic_core.windows import DEFAULT_THRESHOLDS


def write_raw_days(lake: os.PathLike, speeds: pd.DataFrame) -> list:
    offset = 0
    for day, frame in speeds.groupby(speeds.index.date):
        n_t, n_s = frame.shape
        rows = pd.DataFrame(
            {
                "sensor_id": np.tile(frame.columns.to_numpy(dtype=object), n_t),
                "event_time": np.repeat(frame.index.tz_localize("UTC"), n_s),
                "speed_mph": frame.to_numpy(dtype=np.float64).ravel(),
                "volume": pd.array([None] * (n_t * n_s), dtype="Int32"),
                "occupancy": np.nan,
                "source": "synthetic",
                "is_synthetic": True,
                "kafka_topic": "bench",
                "kafka_partition": 0,
                "kafka_offset": np.arange(offset, offset + n_t * n_s, dtype=np.int64),
            }
        )
        write_raw_range(lake, OffsetRange("bench", 0, offset, offset + len(rows) - 1), rows)
        offset += len(rows)
        del day
    return sorted(set(speeds.index.date))


def timed_count(spark: SparkSession, paths: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    windows = aggregate_with_spark(spark, paths, DEFAULT_THRESHOLDS).count()
    return time.perf_counter() - started, windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--sensors", type=int, default=207)
    args = parser.parse_args()
    lake = LOCAL_STATE_DIR / "bench" / "spark-lake"
    shutil.rmtree(lake, ignore_errors=True)
    days = write_raw_days(lake, simulate(args.days, args.sensors, seed=11).speeds_nan())

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    started = time.perf_counter()
    spark = SparkSession.builder.config(map=spark_config(SparkSettings())).getOrCreate()
    session_seconds = time.perf_counter() - started
    try:
        first = [str(raw_day_dir(lake, days[0]))]
        cold, day_windows = timed_count(spark, first)
        warm, _ = timed_count(spark, first)
        every, all_windows = timed_count(spark, [str(raw_day_dir(lake, d)) for d in days])
    finally:
        spark.stop()
    print(
        json.dumps(
            {
                "bench": "aggregate_spark",
                "synthetic": True,
                "spark_master": SparkSettings().master,
                "sensors": args.sensors,
                "days": len(days),
                "session_start_seconds": round(session_seconds, 2),
                "one_day_cold_seconds": round(cold, 2),
                "one_day_warm_seconds": round(warm, 2),
                "one_day_windows": day_windows,
                "all_days_seconds": round(every, 2),
                "all_days_windows": all_windows,
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
