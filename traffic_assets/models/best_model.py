"""`best_model`: the best candidate per horizon, exported to ONNX and published to the registry
with the lineage an auditor needs (lake days, Kafka offset ranges, data and code versions)."""

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    MaterializeResult,
    MetadataValue,
    asset,
)

from resources.lake import LakeResource
from resources.model_store import ModelStoreResource
from traffic_assets.models.baselines import baseline_models, load_baselines
from traffic_assets.models.candidates import candidate_models, load_candidate
from traffic_assets.models.training_data import training_ingest_ids
from traffic_core import features as f
from traffic_core.models import FAMILIES, select_best
from traffic_core.models.publish import write_bundle
from traffic_core.models.training import LOCAL
from traffic_core.registry import ModelRegistry, frame_fingerprint

RAW_EVENTS = AssetKey("raw_traffic_events")


def kafka_lineage(context: AssetExecutionContext, days: list[str]) -> list[dict]:
    """Offset ranges of the ingestion runs that wrote the training days, from Dagster's log."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=RAW_EVENTS, asset_partitions=days), limit=10_000
    ).records
    ranges = {
        (r["topic"], r["partition"], r["first"], r["last"])
        for record in records
        if (meta := record.asset_materialization.metadata.get("offset_ranges")) is not None
        for r in meta.value
    }
    return [
        {"topic": t, "partition": p, "first": first, "last": last}
        for t, p, first, last in sorted(ranges)
    ]


@asset(
    deps=[*candidate_models, baseline_models],
    group_name="models",
    code_version="2",
    kinds={"onnx"},
    description="Per horizon, the candidate with the lowest cross-validated masked MAE, as ONNX "
    "with 90% split-conformal intervals, published to the model registry (`latest`); the "
    "baselines' CV MAE on the same rows stands next to the candidates' in its manifest.",
)
def best_model(
    context: AssetExecutionContext, lake: LakeResource, model_store: ModelStoreResource
) -> MaterializeResult:
    candidates = {
        minutes: [load_candidate(lake, family, minutes) for family in FAMILIES]
        for minutes in f.HORIZONS
    }
    best = select_best(candidates)
    baselines = load_baselines(lake)
    for minutes, models in candidates.items():
        # the cluster validates on every row; baselines, like one process, on the sample
        for model in (m for m in models if m.engine == LOCAL):
            if baselines.validation_rows[minutes] != len(model.residuals):
                raise ValueError(
                    f"{minutes} min: baselines were scored on "
                    f"{baselines.validation_rows[minutes]} CV rows, the candidates on "
                    f"{len(model.residuals)}: run baseline_models with the candidates' config"
                )
    days = lake.features_dir().joinpath("days.txt").read_text().split()
    training = pd.read_parquet(lake.features_dir() / "training.parquet")
    metrics: dict[str, dict[str, Any]] = {
        str(minutes): {
            "selected": best[minutes].family,
            "cv_mae": {m.family: m.cv_mae for m in models},
            "params": best[minutes].params,
            "engine": best[minutes].engine,
            "train_rows": best[minutes].n_train_rows,
            "baselines": baselines.mae(minutes),
        }
        for minutes, models in candidates.items()
    }

    def build(folder: Path) -> dict:
        intervals = write_bundle(folder, best, lake.features_dir() / "feature_context.npz")
        for minutes, interval in intervals.items():
            metrics[minutes]["interval"] = interval
        return {
            "metrics": metrics,
            "feature_names": list(f.FEATURE_NAMES),
            "feature_version": f.FEATURE_VERSION,
            "training_data_version": frame_fingerprint(training),
            "lake_partitions": days,
            "kafka_offsets": kafka_lineage(context, days),
            "ingest_ids": training_ingest_ids(lake),
        }

    registry = ModelRegistry(model_store.path)
    version = registry.publish(build)
    manifest = registry.load_manifest(version)
    table = pd.DataFrame(
        [
            {
                "horizon_min": m,
                "selected": v["selected"],
                "engine": v["engine"],
                "train_rows": v["train_rows"],
                **{k: round(x, 3) for k, x in v["cv_mae"].items()},
                **{k: round(x, 3) for k, x in v["baselines"].items()},
                "interval_90_mph": round(v["interval"]["half_width_mph"], 2),
            }
            for m, v in metrics.items()
        ]
    )
    context.log.info("published model version %s", version)
    return MaterializeResult(
        metadata={
            "model_version": version,
            "metrics": MetadataValue.md(table.to_markdown(index=False)),
            "training_data_version": manifest["training_data_version"],
            "code_version": manifest["code_version"],
            "lake_partitions": MetadataValue.json(days),
            "kafka_offset_ranges": len(manifest["kafka_offsets"]),
            "dagster/uri": MetadataValue.path(str(registry.path(version))),
            "best_cv_mae_60min": float(np.round(best[60].cv_mae, 4)),
            "engines": MetadataValue.json({str(m): model.engine for m, model in best.items()}),
            "train_rows": max(model.n_train_rows for model in best.values()),
        }
    )
