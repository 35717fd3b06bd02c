"""Aggregates -> training features -> three candidate families -> best model in the registry,
materialized by Dagster on two real days, with lineage back to the Kafka offsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from dagster import AssetMaterialization, DagsterInstance, MetadataValue, materialize

from resources import LakeResource, ModelStoreResource
from traffic_assets.aggregation.assets import aggregates_path
from traffic_assets.models.best_model import best_model
from traffic_assets.models.candidates import candidate_models
from traffic_assets.models.training_data import training_features
from traffic_core import features as f
from traffic_core.datasets import load_speed_csv, to_long
from traffic_core.models import load_joblib
from traffic_core.registry import ModelRegistry
from traffic_core.windows import aggregate_windows

pytestmark = pytest.mark.slow
DAYS = ["2012-03-01", "2012-03-02"]


@pytest.fixture
def lake_with_aggregates(tmp_path: Path, shared_data: Path) -> LakeResource:
    speeds = load_speed_csv(shared_data / "metr-la" / "los_loop_speed_2012-03-01_to_03-06.csv")
    lake = LakeResource(root=str(tmp_path / "lake"))
    for day in DAYS:
        readings = to_long(speeds.loc[day]).rename(columns={"timestamp": "event_time"})
        readings["event_time"] = readings["event_time"].dt.tz_localize("UTC")
        path = aggregates_path(lake, day)
        path.parent.mkdir(parents=True)
        aggregate_windows(readings).to_parquet(path, index=False)
    return lake


def test_models_trained_selected_and_published_with_lineage(
    lake_with_aggregates: LakeResource, tmp_path: Path
) -> None:
    store = ModelStoreResource(root=str(tmp_path / "models"))
    training = {"max_rows": 4000, "n_splits": 3}
    run_config = {"ops": {a.key.to_user_string(): {"config": training} for a in candidate_models}}
    offsets = [{"topic": "traffic-events", "partition": 3, "first": 0, "last": 4967}]
    with DagsterInstance.ephemeral() as instance:
        instance.report_runless_asset_event(
            AssetMaterialization(
                "raw_traffic_events",
                partition=DAYS[0],
                metadata={"offset_ranges": MetadataValue.json(offsets)},
            )
        )
        result = materialize(
            [training_features, *candidate_models, best_model],
            resources={"lake": lake_with_aggregates, "model_store": store},
            run_config=run_config,
            instance=instance,
        )
        assert result.success
        published = result.asset_materializations_for_node("best_model")[0].metadata

    registry = ModelRegistry(store.path)
    version = registry.latest()
    assert version == published["model_version"].value
    manifest = registry.verify(version)
    assert manifest["lake_partitions"] == DAYS
    assert manifest["kafka_offsets"] == offsets
    assert manifest["feature_names"] == list(f.FEATURE_NAMES)
    assert set(manifest["metrics"]) == {"15", "30", "60"}
    for horizon in manifest["metrics"].values():
        assert horizon["selected"] in horizon["cv_mae"]
        assert horizon["interval"]["half_width_mph"] > 0

    frame = pd.read_parquet(Path(lake_with_aggregates.root) / "features/training/training.parquet")
    X = frame[list(f.FEATURE_NAMES)].to_numpy(dtype="float32")[:1000]
    folder = registry.path(version)
    session = ort.InferenceSession(str(folder / "h60.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: X})[0].ravel()
    native = load_joblib(folder / "h60.joblib").predict(X)
    assert np.max(np.abs(onnx_out - native)) <= 1e-3
