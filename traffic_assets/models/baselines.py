"""`baseline_models`: persistence and the historical average on the candidates' CV validation
rows, so every candidate's CV MAE has the error of no model at all next to it."""

import json
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from resources.lake import LakeResource
from traffic_assets.models.candidates import TrainingConfig
from traffic_assets.models.training_data import speed_grid, training_features
from traffic_core import features as f
from traffic_core.evaluation.cv_baselines import CvBaselines, cv_baselines, profile_column
from traffic_core.metrics import SCORE_COLUMNS, metrics_by_horizon, persistence_forecast

KEYS = ["timestamp", "sensor_id"]


def baselines_path(lake: LakeResource) -> Path:
    return lake.local_path("models", "baselines", "cv_scores.json")


def load_baselines(lake: LakeResource) -> CvBaselines:
    saved = json.loads(baselines_path(lake).read_text())
    scores = pd.DataFrame(saved["scores"], columns=["horizon", "model", *SCORE_COLUMNS])
    return CvBaselines(scores, {int(m): n for m, n in saved["validation_rows"].items()})


@asset(
    deps=[training_features],
    group_name="models",
    code_version="1",
    kinds={"pandas"},
    description="Persistence (last reading, up to an hour old) and the historical average "
    "(typical speed of the other days) for 15, 30 and 60 minutes, scored on the candidates' "
    "cross-validation rows; give it the candidates' config.",
)
def baseline_models(
    context: AssetExecutionContext, config: TrainingConfig, lake: LakeResource
) -> MaterializeResult:
    targets = [f.target_column(steps) for steps in f.HORIZONS.values()]
    columns = [*KEYS, *(profile_column(m) for m in f.HORIZONS), *targets]
    frame = pd.read_parquet(lake.features_dir() / "training.parquet", columns=columns)
    grid, _ = speed_grid(lake)
    persistence = frame[KEYS].merge(persistence_forecast(grid), on=KEYS, how="left", validate="1:1")
    result = cv_baselines(frame, persistence, config.n_splits, config.max_rows)
    out = baselines_path(lake)
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = {
        "scores": result.scores.to_dict(orient="records"),
        "validation_rows": {str(m): n for m, n in result.validation_rows.items()},
    }
    out.write_text(json.dumps(saved, indent=2))
    table = result.scores.assign(
        validation_rows=result.scores["horizon"].map(result.validation_rows)
    )
    context.log.info("baselines on the CV rows:\n%s", table.round(3).to_string(index=False))
    return MaterializeResult(
        metadata={
            "metrics": MetadataValue.md(table.round(3).to_markdown(index=False)),
            **{
                f"cv_mae_{name}_{minutes}min": round(mae, 4)
                for minutes in f.HORIZONS
                for name, mae in result.mae(minutes).items()
            },
            "scores": MetadataValue.json(metrics_by_horizon(result.scores)),
            "dagster/uri": MetadataValue.path(str(out)),
        }
    )
