"""One asset per algorithm: each trains 15/30/60-minute models with time-series CV."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_pyspark import LazyPySparkResource
from pydantic import Field

from resources.lake import LakeResource
from resources.network import NetworkResource
from traffic_assets.models.spark_features import build_training_matrix
from traffic_assets.models.spark_xgboost import train_horizon_spark
from traffic_assets.models.training_data import training_features
from traffic_core import features as f
from traffic_core.models import FAMILIES, TrainedModel, load_joblib, save_joblib, train_horizon
from traffic_core.models.engine import choose_engine
from traffic_core.models.training import LOCAL, SPARK
from traffic_core.settings import SparkSettings

MODEL_ASSET: dict[str, Any] = {
    "deps": [training_features],
    "group_name": "models",
    "code_version": "1",
}
"""What every candidate asset shares: its input, group and code version."""


class TrainingConfig(Config):
    max_rows: int = 60_000
    """Rows sampled (in time order, fixed seed) per horizon, so months of data fit in memory."""
    n_splits: int = 5


def candidates_dir(lake: LakeResource, family: str) -> Path:
    return lake.local_path("models", "candidates", family)


def load_candidate(lake: LakeResource, family: str, minutes: int) -> TrainedModel:
    return load_joblib(candidates_dir(lake, family) / f"h{minutes}.joblib")


def training_matrix(lake: LakeResource) -> pd.DataFrame:
    return pd.read_parquet(lake.features_dir() / "training.parquet")


def training_rows(lake: LakeResource) -> int:
    """Rows of the training matrix, from the Parquet footer (nothing is loaded)."""
    return pq.ParquetFile(lake.features_dir() / "training.parquet").metadata.num_rows


def _publish_candidates(
    context: AssetExecutionContext,
    lake: LakeResource,
    family: str,
    train: Callable[[int], TrainedModel],
    extra: dict[str, Any] | None = None,
) -> MaterializeResult:
    """Train every horizon with `train(steps)`, keep each model, report what CV chose."""
    out = candidates_dir(lake, family)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for minutes, steps in f.HORIZONS.items():
        model = train(steps)
        save_joblib(model, out / f"h{minutes}.joblib")
        context.log.info(
            "%s %d min on %s: CV MAE %.3f %s, %d rows",
            family,
            minutes,
            model.engine,
            model.cv_mae,
            model.params,
            model.n_train_rows,
        )
        rows.append(
            {
                "horizon_min": minutes,
                "cv_mae": round(model.cv_mae, 4),
                "params": str(model.params),
                "train_rows": model.n_train_rows,
            }
        )
    return MaterializeResult(
        metadata={
            "cv_mae": MetadataValue.md(pd.DataFrame(rows).to_markdown(index=False)),
            **{f"cv_mae_{r['horizon_min']}min": r["cv_mae"] for r in rows},
            "engine": LOCAL,
            "features": "pandas",
            "train_rows": max(r["train_rows"] for r in rows),
            **(extra or {}),
            "dagster/uri": MetadataValue.path(str(out)),
        }
    )


def train_locally(
    lake: LakeResource, family: str, config: TrainingConfig
) -> Callable[[int], TrainedModel]:
    """One process, on at most `max_rows` sampled rows per horizon."""
    frame = training_matrix(lake)
    X = frame[list(f.FEATURE_NAMES)].to_numpy(dtype="float32")

    def train(steps: int) -> TrainedModel:
        return train_horizon(
            X,
            frame[f.target_column(steps)].to_numpy(dtype=np.float64),
            frame["timestamp"],
            family,
            n_splits=config.n_splits,
            max_rows=config.max_rows,
        )

    return train


def _candidate_asset(family: str) -> AssetsDefinition:
    @asset(
        name=f"{family}_model",
        **MODEL_ASSET,
        kinds={"scikitlearn"},
        description=f"{family} models for 15, 30 and 60 minutes ahead, hyper-parameters chosen "
        "by 5-fold forward-chaining cross-validation on masked MAE.",
    )
    def candidate(
        context: AssetExecutionContext, config: TrainingConfig, lake: LakeResource
    ) -> MaterializeResult:
        return _publish_candidates(context, lake, family, train_locally(lake, family, config))

    return candidate


class XGBoostTrainingConfig(TrainingConfig):
    engine: str = Field(
        default="auto",
        description="local: one process on max_rows sampled rows; spark: the Spark cluster "
        "(SPARK_MASTER) on every row; auto: spark from SPARK_TRAINING_MIN_ROWS rows on.",
    )


@asset(
    **MODEL_ASSET,
    kinds={"xgboost"},
    description="xgboost models for 15, 30 and 60 minutes ahead, hyper-parameters chosen by "
    "5-fold forward-chaining cross-validation on masked MAE; past a size, trained on the "
    "Spark cluster on every row of the training matrix computed by Spark from the lake's "
    "aggregates (metadata: engine, train_rows, features).",
)
def xgboost_model(
    context: AssetExecutionContext,
    config: XGBoostTrainingConfig,
    lake: LakeResource,
    pyspark: LazyPySparkResource,
    network: NetworkResource,
) -> MaterializeResult:
    settings = SparkSettings()
    rows = training_rows(lake)
    engine = choose_engine(config.engine, rows, settings.training_min_rows)
    context.log.info("xgboost: %d training rows, engine %s (%s)", rows, engine, config.engine)
    if engine == LOCAL:
        return _publish_candidates(context, lake, "xgboost", train_locally(lake, "xgboost", config))
    # the days training_features chose, their matrix computed where the aggregates are
    days = lake.features_dir().joinpath("days.txt").read_text().split()
    spark = pyspark.spark_session
    frame = build_training_matrix(spark, lake.local_path(), network.graph(), days).cache()

    def on_cluster(steps: int) -> TrainedModel:
        trained = train_horizon_spark(
            frame,
            f.target_column(steps),
            n_splits=config.n_splits,
            num_workers=settings.training_workers,
        )
        return trained.model

    try:
        return _publish_candidates(
            context,
            lake,
            "xgboost",
            on_cluster,
            {
                "engine": SPARK,
                "spark_master": spark.sparkContext.master,
                "features": "spark",
                "feature_days": MetadataValue.json(days),
            },
        )
    finally:
        frame.unpersist()


candidate_models = [
    *(_candidate_asset(family) for family in FAMILIES if family != "xgboost"),
    xgboost_model,
]
