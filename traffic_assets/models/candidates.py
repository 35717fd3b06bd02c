"""One asset per algorithm: each trains 15/30/60-minute models with time-series CV."""

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from resources.lake import LakeResource
from traffic_assets.models.training_data import training_features
from traffic_core import features as f
from traffic_core.models import FAMILIES, TrainedModel, load_joblib, save_joblib, train_horizon


class TrainingConfig(Config):
    max_rows: int = 60_000
    """Rows sampled (in time order, fixed seed) per horizon, so months of data fit in memory."""
    n_splits: int = 5


def candidates_dir(lake: LakeResource, family: str) -> Path:
    return lake.path("models", "candidates", family)


def load_candidate(lake: LakeResource, family: str, minutes: int) -> TrainedModel:
    return load_joblib(candidates_dir(lake, family) / f"h{minutes}.joblib")


def training_matrix(lake: LakeResource) -> pd.DataFrame:
    return pd.read_parquet(lake.features_dir() / "training.parquet")


def _candidate_asset(family: str) -> AssetsDefinition:
    @asset(
        name=f"{family}_model",
        deps=[training_features],
        group_name="models",
        code_version="1",
        kinds={"xgboost" if family == "xgboost" else "scikitlearn"},
        description=f"{family} models for 15, 30 and 60 minutes ahead, hyper-parameters chosen "
        "by 5-fold forward-chaining cross-validation on masked MAE.",
    )
    def candidate(
        context: AssetExecutionContext, config: TrainingConfig, lake: LakeResource
    ) -> MaterializeResult:
        frame = training_matrix(lake)
        X = frame[list(f.FEATURE_NAMES)].to_numpy(dtype="float32")
        out = candidates_dir(lake, family)
        out.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = []
        for minutes, steps in f.HORIZONS.items():
            y = frame[f.target_column(steps)].to_numpy(dtype=np.float64)
            model = train_horizon(
                X,
                y,
                frame["timestamp"],
                family,
                n_splits=config.n_splits,
                max_rows=config.max_rows,
            )
            save_joblib(model, out / f"h{minutes}.joblib")
            context.log.info(
                "%s %d min: CV MAE %.3f %s", family, minutes, model.cv_mae, model.params
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
                "dagster/uri": MetadataValue.path(str(out)),
            }
        )

    return candidate


candidate_models = [_candidate_asset(family) for family in FAMILIES]
