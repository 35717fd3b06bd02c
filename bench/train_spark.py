"""XGBoost training on the Spark cluster against one process, on simulated sensors x days.

Simulates `--sensors` sensors (the `synthetic_graph` network) for `--days` days and one day
more, builds the training rows as `training_features` does (cross-fitted profile, every
horizon's target) and the following day's features with the profile of the training days,
then trains the 60-minute XGBoost model three ways, each with the same grid point and
forward-chaining folds: one process on every row, one process on a `--sample-rows` sample
(the asset's default path) and the Spark cluster on every row, reading the training matrix
Spark computes from the days' aggregates in a temporary lake, as the asset does
(`--features pandas`: the pandas matrix's Parquet file instead). Prints one JSON line: rows,
wall seconds and training rows/s of each, and the masked MAE each reaches on the following
day, with the load average (the machine is shared, so wall seconds move with it). The
default size (2,000 sensors x 30 days, 17 million rows of 60 features) needs tens of GB:
the one-process runs hold every row in memory, which is what the cluster avoids.

    .venv/bin/python bench/train_spark.py --sensors 2000 --days 30 --cluster
    .venv/bin/python bench/train_spark.py --sensors 100 --days 7 --master local[2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import SparkSession

from bench.features_spark import write_speed_aggregates
from infra.stack.spark import SparkCluster
from resources.spark import export_python_for_executors, spark_config
from traffic_assets.models.spark_features import build_training_matrix
from traffic_assets.models.spark_xgboost import read_training_matrix, train_horizon_spark
from traffic_core import features as f
from traffic_core.datasets import SensorGraph
from traffic_core.metrics import masked_mae
from traffic_core.models import TrainedModel, get_family, train_horizon, training_frame
from traffic_core.settings import SparkSettings
from traffic_core.simulation import simulate, synthetic_graph

TARGET = f.target_column(f.HORIZONS[60])
START = "2012-03-01"


def simulated_rows(
    sensors: int, days: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, SensorGraph]:
    """(training rows of `days` days, feature rows of the day after them with targets, the
    training days' speeds, the graph)."""
    graph = synthetic_graph(sensors, seed=0)
    speeds = simulate(days + 1, graph=graph, seed=0).speeds_nan()
    speeds.index = pd.date_range(START, periods=len(speeds), freq="5min")
    test_day = pd.Timestamp(START) + pd.Timedelta(days=days)
    train_speeds = speeds[speeds.index < test_day]
    context = f.FeatureContext.from_graph(graph, f.fit_profile(train_speeds))
    train = training_frame(train_speeds, context)
    test = f.make_features(speeds, context)
    test = test.merge(f.make_targets(speeds, sensor_ids=context.sensor_ids))
    test = test[(test["timestamp"] >= test_day) & test[TARGET].notna() & (test[TARGET] != 0.0)]
    return train, test, train_speeds, graph


def run(name: str, train: Callable[[], TrainedModel], test: pd.DataFrame) -> dict[str, Any]:
    started = time.perf_counter()
    model = train()
    wall = time.perf_counter() - started
    forecast = model.predict(test[list(f.FEATURE_NAMES)].to_numpy(dtype="float32"))
    result = {
        "engine": name,
        "train_rows": model.n_train_rows,
        "wall_seconds": round(wall, 1),
        "rows_per_second": round(model.n_train_rows / wall),
        "cv_mae": round(model.cv_mae, 4),
        "next_day_mae": round(masked_mae(test[TARGET].to_numpy(), forecast), 4),
        "load_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result), flush=True)
    return result


@contextmanager
def spark_session(master: str, cluster_state: Path | None, port: int) -> Iterator[SparkSession]:
    """A session on `master`, or on a two-worker standalone cluster started (and stopped)
    under `cluster_state` on `port` when that is given."""
    cluster = None
    if cluster_state is not None:
        cluster = SparkCluster(cluster_state, port=port, webui_port=port + 1000)
        cluster.start(timeout=180.0)
        master = cluster.master_url
    config = spark_config(SparkSettings(master=master))
    export_python_for_executors(config)
    session = SparkSession.builder.config(map=config).getOrCreate()
    try:
        yield session
    finally:
        session.stop()
        if cluster is not None:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sensors", type=int, default=2000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--sample-rows", type=int, default=60_000)
    parser.add_argument("--n-splits", type=int, default=2)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--cluster", action="store_true", help="start a 2-worker cluster")
    parser.add_argument("--port", type=int, default=17977, help="its master's port")
    parser.add_argument("--workers", type=int, default=2, help="Spark tasks per training")
    parser.add_argument(
        "--features", choices=["spark", "pandas"], default="spark", help="the cluster's matrix"
    )
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    started = time.perf_counter()
    train, test, train_speeds, graph = simulated_rows(args.sensors, args.days)
    prepare = time.perf_counter() - started
    grid = [get_family("xgboost").grid[0]]
    X = train[list(f.FEATURE_NAMES)]

    def local(max_rows: int | None) -> Callable[[], TrainedModel]:
        return lambda: train_horizon(
            X, train[TARGET], train["timestamp"], "xgboost", grid, args.n_splits, max_rows=max_rows
        )

    results = [
        run("local_sampled", local(args.sample_rows), test),
        run("local_all_rows", local(None), test),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "training.parquet"
        train.to_parquet(path, index=False)
        state = Path(tmp) / "spark" if args.cluster else None
        with spark_session(args.master, state, args.port) as spark:
            matrix_started = time.perf_counter()
            if args.features == "spark":
                days = write_speed_aggregates(Path(tmp) / "lake", train_speeds)
                frame = build_training_matrix(spark, Path(tmp) / "lake", graph, days).cache()
            else:
                frame = read_training_matrix(spark, path)
            matrix_rows = frame.count()
            matrix_seconds = time.perf_counter() - matrix_started
            master = spark.sparkContext.master

            def on_spark() -> TrainedModel:
                trained = train_horizon_spark(
                    frame, TARGET, grid, args.n_splits, num_workers=args.workers
                )
                return trained.model

            results.append(run("spark", on_spark, test))
    print(
        json.dumps(
            {
                "sensors": args.sensors,
                "days": args.days,
                "horizon_min": 60,
                "grid_point": grid[0],
                "n_splits": args.n_splits,
                "spark_master": master,
                "rows": len(train),
                "cluster_features": args.features,
                "cluster_matrix_rows": matrix_rows,
                "cluster_matrix_seconds": round(matrix_seconds, 1),
                "next_day_rows": len(test),
                "prepare_seconds": round(prepare, 1),
                "cpus": os.cpu_count(),
                "results": results,
                "load_1min": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
