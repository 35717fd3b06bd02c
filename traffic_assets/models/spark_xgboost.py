"""The XGBoost family trained on the Spark cluster (`xgboost.spark`), for rows too many to
sample into one process.

The same model as `train_horizon` builds, by another engine: rows with a valid target, the
booster fitted on target - base (`ResidualRegressor`'s change from the latest reading), the
same grid chosen by pooled out-of-fold masked MAE over the same forward-chaining folds (in
time, with the 12-step gap: folds filter rows by timestamp, so nothing is collected but the
validation forecasts), then a refit on every row. The booster comes back to the driver as the
family's `ResidualRegressor`, so the ONNX exporter and the registry take it unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from xgboost.spark import SparkXGBRegressor, SparkXGBRegressorModel

from traffic_assets.aggregation.assets import spark_url
from traffic_core import features as f
from traffic_core.cv import FoldWindow, fold_windows
from traffic_core.models import TrainedModel, get_family
from traffic_core.models.candidates import Params
from traffic_core.models.engine import BASE_FEATURES, residual_xgboost, xgboost_settings
from traffic_core.models.training import SPARK, grid_search

FEATURES = list(f.FEATURE_NAMES)
TARGET = "target"
BASE = "base"
LABEL = "change"
FORECAST = "forecast"
_NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"


def _present(column: str) -> Column:
    """The column with NaN as null (pandas writes missing as NaN, Spark features as null)."""
    return F.when(~F.isnan(column), F.col(column))


def read_training_matrix(spark: SparkSession, path: Path | str) -> DataFrame:
    """`training_features`' Parquet file as Spark rows. pandas writes nanosecond timestamps,
    which Spark reads only as integers: they become timestamps again here."""
    previous = spark.conf.get(_NANOS_AS_LONG, "false") or "false"
    spark.conf.set(_NANOS_AS_LONG, "true")
    try:
        frame = spark.read.parquet(spark_url(Path(path)))
        if dict(frame.dtypes)["timestamp"] == "bigint":
            micros = F.col("timestamp").cast("long") / 1000
            frame = frame.withColumn("timestamp", F.timestamp_micros(micros.cast("long")))
        return frame.cache()
    finally:
        spark.conf.set(_NANOS_AS_LONG, previous)


def labelled_rows(frame: DataFrame, target: str) -> DataFrame:
    """(timestamp, sensor_id, features, target, base, change) for the rows whose `target` is
    a reading (not null, NaN or the 0 mph marker). The base is `ResidualRegressor.base` to
    the bit: the first base feature present, in float32, else 0."""
    base = F.coalesce(*(_present(n).cast("float") for n in BASE_FEATURES), F.lit(0.0).cast("float"))
    truth = _present(target)
    return frame.where(truth.isNotNull() & (truth != 0.0)).select(
        "timestamp",
        "sensor_id",
        *FEATURES,
        truth.alias(TARGET),
        base.cast("double").alias(BASE),
        (truth - base.cast("double")).alias(LABEL),
    )


def fit_booster(rows: DataFrame, params: Params, num_workers: int) -> SparkXGBRegressorModel:
    """One grid point's booster on the change, spread over `num_workers` Spark tasks."""
    settings = xgboost_settings(params)
    # categorical features are declared by feature_types in xgboost.spark; there are none
    settings.pop("enable_categorical", None)
    # a fold's rows are a time prefix: as read, they may sit in one partition, so one worker
    # would train alone; spreading them (round-robin, deterministic) shares every fit
    settings |= {"features_col": FEATURES, "label_col": LABEL, "num_workers": num_workers}
    settings |= {"force_repartition": True, "verbose": False}
    return SparkXGBRegressor(**settings).fit(rows)


def forecast(model: SparkXGBRegressorModel, rows: DataFrame) -> DataFrame:
    """The rows with `forecast`: base + predicted change, the level in mph, as ONNX gives it."""
    predicted = model.transform(rows)
    return predicted.withColumn(FORECAST, F.col(BASE) + F.col(model.getOrDefault("predictionCol")))


def _in_fold(fold: FoldWindow) -> tuple[Column, Column]:
    stamp = F.col("timestamp")
    train = stamp < F.lit(fold.train_before.to_pydatetime())
    val = stamp.between(fold.val_start.to_pydatetime(), fold.val_end.to_pydatetime())
    return train, val


def _ordered(frame: DataFrame, columns: list[str]) -> pd.DataFrame:
    """Validation rows as pandas, in (timestamp, sensor) order, the order folds pool in."""
    rows: pd.DataFrame = frame.select("timestamp", "sensor_id", *columns).toPandas()
    return rows.sort_values(["timestamp", "sensor_id"], kind="stable")


@dataclass(eq=False)
class ClusterModel:
    """What a cluster training gives: the registry's `TrainedModel` and the Spark model it
    was converted from (for forecasts on the cluster)."""

    model: TrainedModel
    spark_model: SparkXGBRegressorModel


def train_horizon_spark(
    frame: DataFrame,
    target: str,
    grid: list[Params] | None = None,
    n_splits: int = 5,
    gap_steps: int = max(f.HORIZONS.values()),
    num_workers: int = 2,
) -> ClusterModel:
    """`train_horizon` for the XGBoost family on the cluster: every valid row, no sampling."""
    family = get_family("xgboost")
    points = list(family.grid if grid is None else grid)
    rows = labelled_rows(frame, target).cache()
    try:
        distinct: pd.DataFrame = rows.select("timestamp").distinct().toPandas()
        stamps = distinct["timestamp"]
        folds = [_in_fold(fold) for fold in fold_windows(stamps, n_splits, gap_steps)]
        truth = np.concatenate([_ordered(rows.where(val), [TARGET])[TARGET] for _, val in folds])

        def out_of_fold(params: Params) -> np.ndarray:
            parts = []
            for train, val in folds:
                model = fit_booster(rows.where(train), params, num_workers)
                parts.append(_ordered(forecast(model, rows.where(val)), [FORECAST])[FORECAST])
            return np.concatenate(parts)

        results, index, oof = grid_search(points, out_of_fold, truth)
        started = time.perf_counter()
        spark_model = fit_booster(rows, points[index], num_workers)
        refit_seconds = time.perf_counter() - started
        n_rows = rows.count()
    finally:
        rows.unpersist()
    trained = TrainedModel(
        family=family.name,
        params=dict(points[index]),
        estimator=residual_xgboost(spark_model, points[index]),
        cv_mae=results[index]["cv_mae"],
        cv_results=results,
        residuals=truth - oof,
        n_train_rows=n_rows,
        refit_seconds=refit_seconds,
        engine=SPARK,
    )
    return ClusterModel(trained, spark_model)
