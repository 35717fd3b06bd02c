"""Spark 5-minute aggregation time on the raw zone: one day cold and warm, and all days.

Writes N days of SYNTHETIC readings (207 sensors), or the six real METR-LA days, as raw lake
files, then times `aggregate_with_spark` (count of output windows forces the whole job) on
any master. Prints one JSON line.

    .venv/bin/python bench/aggregate_spark.py --days 28
    .venv/bin/python bench/aggregate_spark.py --data real --master local[2]
    .venv/bin/python bench/aggregate_spark.py --data real --start-cluster 2   # own 2-worker cluster
    .venv/bin/python bench/aggregate_spark.py --data real --master spark://127.0.0.1:7077
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import pandas as pd
from pyspark.sql import SparkSession

from infra.stack.serving import REAL_SIX_DAYS
from infra.stack.spark import SparkCluster
from resources.spark import export_python_for_executors, spark_config
from traffic_assets.aggregation.assets import spark_url
from traffic_assets.aggregation.spark_windows import aggregate_with_spark
from traffic_core.datasets import load_speed_csv
from traffic_core.ingestion.raw_import import write_speeds_as_raw
from traffic_core.lake import raw_day_dir
from traffic_core.settings import LOCAL_STATE_DIR, PlatformSettings, SparkSettings
from traffic_core.simulation import simulate
from traffic_core.windows import DEFAULT_THRESHOLDS

CLUSTER_STATE = LOCAL_STATE_DIR / "bench-spark-cluster"
"""Outside .local/bench, which other benches wipe while they run."""


def timed_count(spark: SparkSession, paths: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    windows = aggregate_with_spark(spark, paths, DEFAULT_THRESHOLDS).count()
    return time.perf_counter() - started, windows


def speeds(data: str, days: int, sensors: int) -> pd.DataFrame:
    if data == "real":
        return load_speed_csv(PlatformSettings().data_dir / "metr-la" / REAL_SIX_DAYS)
    return simulate(days, sensors, seed=11).speeds_nan()


def run(master: str, lake: os.PathLike, days: list) -> dict[str, object]:
    config = spark_config(SparkSettings(master=master))
    export_python_for_executors(config)
    started = time.perf_counter()
    spark = SparkSession.builder.config(map=config).getOrCreate()
    session_seconds = time.perf_counter() - started
    try:
        first = [spark_url(raw_day_dir(lake, days[0]))]
        cold, day_windows = timed_count(spark, first)
        warm, _ = timed_count(spark, first)
        every, all_windows = timed_count(spark, [spark_url(raw_day_dir(lake, d)) for d in days])
    finally:
        spark.stop()
    return {
        "spark_master": master,
        "session_start_seconds": round(session_seconds, 2),
        "one_day_cold_seconds": round(cold, 2),
        "one_day_warm_seconds": round(warm, 2),
        "one_day_windows": day_windows,
        "all_days_seconds": round(every, 2),
        "all_days_windows": all_windows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", choices=["simulated", "real"], default="simulated")
    parser.add_argument("--days", type=int, default=28, help="simulated days")
    parser.add_argument("--sensors", type=int, default=207, help="simulated sensors")
    parser.add_argument("--master", default=SparkSettings().master)
    parser.add_argument(
        "--start-cluster",
        type=int,
        metavar="WORKERS",
        help="start a standalone cluster of this many 1-core workers for the run (overrides "
        "--master), stopped afterwards",
    )
    args = parser.parse_args()
    lake = LOCAL_STATE_DIR / "bench" / "spark-lake"
    shutil.rmtree(lake, ignore_errors=True)
    frame = speeds(args.data, args.days, args.sensors)
    days = write_speeds_as_raw(
        lake, frame, source=args.data, is_synthetic=args.data == "simulated", topic="bench"
    )

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    cluster = None
    master = args.master
    if args.start_cluster:
        cluster = SparkCluster(
            CLUSTER_STATE, port=7177, webui_port=8180, workers=args.start_cluster
        )
        started = time.perf_counter()
        cluster.start()
        cluster_seconds = round(time.perf_counter() - started, 2)
        master = cluster.master_url
    try:
        figures = run(master, lake, days)
    finally:
        if cluster is not None:
            cluster.stop()
    print(
        json.dumps(
            {
                "bench": "aggregate_spark",
                "data": args.data,
                "synthetic": args.data == "simulated",
                "sensors": frame.shape[1],
                "days": len(days),
                **(
                    {
                        "cluster_workers": args.start_cluster,
                        "cluster_start_seconds": cluster_seconds,
                    }
                    if cluster
                    else {}
                ),
                **figures,
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
