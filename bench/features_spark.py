"""Feature computation time, Spark against pandas, on the six real METR-LA days.

Writes the days' 5-minute aggregates (core rules, the Spark asset's layout) to a temporary
lake, then times the pandas path (`speed_grid`, `fit_profile`, `make_features`) and the Spark
path (`build_feature_days`: read, features, per-day Parquet write) twice, cold and warm. Wall
seconds depend on what else the machine runs, so CPU seconds (this process for pandas, the
Spark JVM for Spark) and the load average are printed too, as one JSON line.

    .venv/bin/python bench/features_spark.py --master local[2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession

from infra.stack.serving import REAL_SIX_DAYS
from resources.lake import LakeResource
from resources.spark import export_python_for_executors, spark_config
from traffic_assets.models.spark_features import build_feature_days
from traffic_assets.models.training_data import speed_grid
from traffic_core import features as f
from traffic_core.datasets import load_metr_la_graph, load_speed_csv, to_long
from traffic_core.lake import aggregates_file
from traffic_core.settings import PlatformSettings, SparkSettings
from traffic_core.windows import aggregate_windows

TRAIN_END = "2012-03-05 23:55"


def write_aggregates(root: Path, data_dir: Path) -> list[str]:
    return write_speed_aggregates(root, load_speed_csv(data_dir / "metr-la" / REAL_SIX_DAYS))


def write_speed_aggregates(root: Path, speeds: pd.DataFrame) -> list[str]:
    """The 5-minute aggregates of a wide speed frame (core rules, the Spark asset's layout)
    in a lake at `root`, one file per day; returns the days."""
    days = sorted({str(d) for d in speeds.index.date})
    for day in days:
        readings = to_long(speeds.loc[day]).rename(columns={"timestamp": "event_time"})
        readings["event_time"] = readings["event_time"].dt.tz_localize("UTC")
        aggregates = aggregate_windows(readings)
        aggregates["window_start"] = aggregates["window_start"].astype("datetime64[us, UTC]")
        path = aggregates_file(root, day)
        path.parent.mkdir(parents=True)
        aggregates.to_parquet(path, index=False)
    return days


def jvm_cpu_seconds(spark: SparkSession) -> float:
    """User + system CPU of the Spark driver JVM (local mode: the executors too)."""
    pid = spark.sparkContext._gateway.proc.pid  # type: ignore[attr-defined]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(run: Callable[[], object], cpu: Callable[[], float]) -> dict[str, float]:
    wall, used = time.perf_counter(), cpu()
    run()
    return {
        "wall_seconds": round(time.perf_counter() - wall, 2),
        "cpu_seconds": round(cpu() - used, 2),
        "load_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    settings = PlatformSettings()
    graph = load_metr_la_graph(settings.data_dir / "metr-la")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        days = write_aggregates(root, settings.data_dir)
        lake = LakeResource(root=str(root))

        def pandas_features() -> None:
            grid, _ = speed_grid(lake, days)
            context = f.FeatureContext.from_graph(graph, f.fit_profile(grid.loc[:TRAIN_END]))
            f.make_features(grid, context)

        pandas = timed(pandas_features, time.process_time)
        config = spark_config(SparkSettings(master=args.master))
        export_python_for_executors(config)
        spark = SparkSession.builder.config(map=config).getOrCreate()
        try:
            runs = [
                timed(
                    lambda: build_feature_days(spark, root, graph, days, days[:-1]),
                    lambda: jvm_cpu_seconds(spark),
                )
                for _ in range(2)
            ]
        finally:
            spark.stop()
    rows = len(days) * 288 * len(graph)
    print(
        json.dumps(
            {
                "spark_master": args.master,
                "rows": rows,
                "pandas": pandas,
                "spark_cold": runs[0],
                "spark_warm": runs[1],
            }
        )
    )


if __name__ == "__main__":
    main()
