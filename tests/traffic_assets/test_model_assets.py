"""Aggregates -> training features -> three candidate families -> best model in the registry,
and the neural family in its own, materialized by Dagster on two real days, with lineage back
to the Kafka offsets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    ExecuteInProcessResult,
    MetadataValue,
    materialize,
)
from sklearn.dummy import DummyRegressor

from resources import LakeResource, ModelStoreResource
from resources.network import NetworkResource
from resources.spark import build_spark_resource
from traffic_assets.models.baselines import baseline_models
from traffic_assets.models.best_model import best_model
from traffic_assets.models.candidates import candidate_models
from traffic_assets.models.neural_model import neural_model
from traffic_assets.models.training_data import training_features
from traffic_core import features as f
from traffic_core.datasets import load_speed_csv, to_long
from traffic_core.evaluation.cv_baselines import cv_validation_rows
from traffic_core.metrics import masked_mae, persistence_forecast
from traffic_core.models import Family, load_joblib, train_horizon
from traffic_core.neural_bundle import NeuralBundle
from traffic_core.registry import ModelRegistry
from traffic_core.windows import aggregate_windows

pytestmark = pytest.mark.slow
DAYS = ["2012-03-01", "2012-03-02"]
KEYS = ["timestamp", "sensor_id"]


@pytest.fixture
def speeds(shared_data: Path) -> pd.DataFrame:
    return load_speed_csv(shared_data / "metr-la" / "los_loop_speed_2012-03-01_to_03-06.csv")


@pytest.fixture
def lake_with_aggregates(tmp_path: Path, speeds: pd.DataFrame) -> LakeResource:
    lake = LakeResource(root=str(tmp_path / "lake"))
    for day in DAYS:
        readings = to_long(speeds.loc[day]).rename(columns={"timestamp": "event_time"})
        readings["event_time"] = readings["event_time"].dt.tz_localize("UTC")
        path = lake.aggregates_file(day)
        path.parent.mkdir(parents=True)
        aggregate_windows(readings).to_parquet(path, index=False)
    return lake


OFFSETS = [{"topic": "traffic-events", "partition": 3, "first": 0, "last": 4967}]


def materialize_after_ingestion(
    assets: list[Any], resources: dict[str, Any], run_config: dict[str, Any]
) -> ExecuteInProcessResult:
    """Materialize `assets` in an instance whose log holds an ingestion run of DAYS[0] that
    stored OFFSETS: the Kafka lineage a published version must carry."""
    with DagsterInstance.ephemeral() as instance:
        instance.report_runless_asset_event(
            AssetMaterialization(
                "raw_traffic_events",
                partition=DAYS[0],
                metadata={"offset_ranges": MetadataValue.json(OFFSETS)},
            )
        )
        result = materialize(assets, resources=resources, run_config=run_config, instance=instance)
    assert result.success
    return result


def test_models_trained_selected_and_published_with_lineage(
    lake_with_aggregates: LakeResource, speeds: pd.DataFrame, tmp_path: Path
) -> None:
    store = ModelStoreResource(root=str(tmp_path / "models"))
    training = {"max_rows": 4000, "n_splits": 3}
    trained = [*candidate_models, baseline_models]
    run_config = {"ops": {a.key.to_user_string(): {"config": training} for a in trained}}
    run_config["ops"]["training_features"] = {"config": {"days": DAYS}}  # no raw zone here
    result = materialize_after_ingestion(
        [training_features, *trained, best_model],
        {
            "lake": lake_with_aggregates,
            "model_store": store,
            "network": NetworkResource(),
            "pyspark": build_spark_resource(),  # lazy: the local engine never starts it
        },
        run_config,
    )
    published = result.asset_materializations_for_node("best_model")[0].metadata
    xgboost = result.asset_materializations_for_node("xgboost_model")[0].metadata
    baselines = result.asset_materializations_for_node("baseline_models")[0].metadata

    frame = pd.read_parquet(Path(lake_with_aggregates.root) / "features/training/training.parquet")
    registry = ModelRegistry(store.path)
    version = registry.latest()
    assert version == published["model_version"].value
    assert (xgboost["engine"].value, xgboost["features"].value) == ("local", "pandas")
    assert xgboost["train_rows"].value == training["max_rows"]
    manifest = registry.verify(version)
    assert manifest["lake_partitions"] == DAYS
    assert manifest["kafka_offsets"] == OFFSETS
    assert manifest["feature_names"] == list(f.FEATURE_NAMES)
    assert set(manifest["metrics"]) == {"15", "30", "60"}
    for minutes, horizon in manifest["metrics"].items():
        assert horizon["selected"] in horizon["cv_mae"]
        assert horizon["engine"] == "local"
        assert horizon["train_rows"] <= training["max_rows"]
        assert horizon["interval"]["half_width_mph"] > 0
        assert set(horizon["baselines"]) == {"persistence", "historical_average"}
        for name, mae in horizon["baselines"].items():
            assert round(mae, 4) == baselines[f"cv_mae_{name}_{minutes}min"].value
    assert "historical_average" in baselines["metrics"].value

    # persistence from the raw speeds, on the rows the candidates were validated on
    column = f.target_column(f.HORIZONS[60])
    rows = cv_validation_rows(frame[column], frame["timestamp"], **training)
    last = persistence_forecast(speeds.loc[DAYS[0] : DAYS[-1]])
    last = frame[KEYS].merge(last, on=KEYS, how="left")[column].to_numpy()[rows]
    ha = frame["profile_60min"].to_numpy()[rows]
    truth = frame[column].to_numpy()[rows]
    both = ~np.isnan(last) & ~np.isnan(ha)
    expected = masked_mae(truth[both], last[both])
    assert manifest["metrics"]["60"]["baselines"]["persistence"] == pytest.approx(expected)

    X = frame[list(f.FEATURE_NAMES)].to_numpy(dtype="float32")[:1000]
    folder = registry.path(version)
    session = ort.InferenceSession(str(folder / "h60.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: X})[0].ravel()
    native = load_joblib(folder / "h60.joblib").predict(X)
    assert np.max(np.abs(onnx_out - native)) <= 1e-3


def test_neural_family_published_to_its_own_registry_with_the_same_lineage(
    lake_with_aggregates: LakeResource, speeds: pd.DataFrame, tmp_path: Path
) -> None:
    store = ModelStoreResource(root=str(tmp_path / "models"))
    run_config = {
        "ops": {
            "training_features": {"config": {"days": DAYS}},
            "neural_model": {"config": {"max_epochs": 1, "channels": 4}},  # small and quick
        }
    }
    result = materialize_after_ingestion(
        [training_features, neural_model],
        {"lake": lake_with_aggregates, "model_store": store, "network": NetworkResource()},
        run_config,
    )
    neural = result.asset_materializations_for_node("neural_model")[0].metadata

    assert not store.path.exists()  # the API's registry is left alone
    registry = ModelRegistry(store.neural_path)
    version = neural["model_version"].value
    assert registry.latest() == version
    manifest = registry.verify(version)
    assert manifest["lake_partitions"] == DAYS
    assert manifest["kafka_offsets"] == OFFSETS
    assert set(manifest["metrics"]) == {"15", "30", "60"}
    bundle = NeuralBundle.load(registry, version)
    assert len(bundle.sensor_ids) == 207
    forecast = bundle.forecast(speeds, pd.Timestamp(f"{DAYS[-1]} 17:00"))
    assert forecast.notna().all().all() and forecast.to_numpy().min() > 0


def test_baselines_are_scored_on_the_rows_the_candidates_are_validated_on() -> None:
    """A model predicting 0 leaves residuals equal to the targets; targets 1000 + row position
    thus name the rows train_horizon validated on, in its order."""
    stamps = pd.Series(pd.date_range("2012-03-01", periods=2 * 288, freq="5min").repeat(4))
    y = 1000.0 + np.arange(len(stamps))
    y[np.random.default_rng(2).random(len(y)) < 0.1] = np.nan
    zero = Family("zero", lambda: DummyRegressor(strategy="constant", constant=0.0), ({},))
    X = np.zeros((len(y), 1), dtype="float32")
    model = train_horizon(X, y, stamps, zero, n_splits=3, max_rows=1500)
    validated = model.residuals - 1000.0
    rows = cv_validation_rows(y, stamps, n_splits=3, max_rows=1500)
    np.testing.assert_array_equal(rows, validated)
