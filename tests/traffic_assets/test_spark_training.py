"""XGBoost trained on the standalone Spark cluster (two workers) is the one-process model by
another engine: within 1 % MAE of it on the same simulated rows, also when the cluster reads
the training matrix Spark computed from the lake's aggregates instead of the pandas one, its
ONNX export (through the registry) forecasts what Spark forecasts, and the xgboost asset goes
to the cluster by itself past the configured row count, training on the Spark matrix and
saying so in its metadata.

Sizes are small (40 simulated sensors, four days, one grid point, two folds) so the module
runs in a few minutes on two cores; each Spark fit still runs as two barrier tasks, one per
worker, each holding half the rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dagster import materialize
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from spark_helpers import standalone_cluster, write_aggregates

from infra.stack.spark import SparkCluster
from resources.lake import LakeResource
from resources.network import NetworkResource
from resources.spark import build_spark_resource, export_python_for_executors, spark_config
from traffic_assets.models import candidates
from traffic_assets.models import spark_features as sf
from traffic_assets.models import spark_xgboost as sx
from traffic_core import features as f
from traffic_core.metrics import masked_mae
from traffic_core.model_bundle import onnx_file
from traffic_core.models import FAMILIES, Family, onnx_predict, train_horizon, training_frame
from traffic_core.models.candidates import build_xgboost
from traffic_core.models.publish import write_bundle
from traffic_core.registry import ModelRegistry
from traffic_core.settings import SparkSettings
from traffic_core.simulation import simulate, synthetic_graph

GRID = [{"max_depth": 4, "n_estimators": 60}]
TARGET = f.target_column(f.HORIZONS[60])
TEST_DAY = pd.Timestamp("2012-03-04")
DAYS = ["2012-03-01", "2012-03-02", "2012-03-03", "2012-03-04"]
NETWORK = "synthetic-40"


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[SparkCluster]:
    yield from standalone_cluster(request)


@pytest.fixture(scope="module")
def simulated() -> tuple[pd.DataFrame, f.FeatureContext]:
    """Four simulated days of 40 sensors and their feature context."""
    graph = NetworkResource(dataset=NETWORK).graph()
    assert graph.sensor_ids == synthetic_graph(40, seed=0).sensor_ids
    speeds = simulate(4, graph=graph, seed=0).speeds_nan()
    speeds.index = pd.date_range("2012-03-01", periods=len(speeds), freq="5min")
    return speeds, f.FeatureContext.from_graph(graph, f.fit_profile(speeds))


@pytest.fixture(scope="module")
def rows(simulated: tuple[pd.DataFrame, f.FeatureContext]) -> pd.DataFrame:
    """Training features and targets of the simulated days (46,080 rows)."""
    return training_frame(*simulated)


@pytest.fixture(scope="module")
def lake(
    tmp_path_factory: pytest.TempPathFactory,
    simulated: tuple[pd.DataFrame, f.FeatureContext],
    rows: pd.DataFrame,
) -> LakeResource:
    """A lake holding the simulated days' aggregates and what `training_features` writes."""
    lake = LakeResource(root=str(tmp_path_factory.mktemp("lake")))
    write_aggregates(lake.path(), simulated[0], DAYS)
    lake.features_dir().mkdir(parents=True)
    rows.to_parquet(lake.features_dir() / "training.parquet", index=False)
    lake.features_dir().joinpath("days.txt").write_text("\n".join(DAYS))
    return lake


@pytest.fixture(scope="module")
def spark(cluster: SparkCluster) -> Iterator[SparkSession]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        cluster.wait_ready(timeout=120.0)
        config = spark_config(SparkSettings(master=cluster.master_url))
        export_python_for_executors(config)
        session = SparkSession.builder.config(map=config).getOrCreate()
        yield session
        session.stop()


@pytest.mark.integration
@pytest.mark.slow
def test_cluster_model_matches_one_process_and_its_onnx(
    spark: SparkSession,
    cluster: SparkCluster,
    simulated: tuple[pd.DataFrame, f.FeatureContext],
    rows: pd.DataFrame,
    tmp_path: Path,
) -> None:
    train, test = split(rows)
    path = tmp_path / "training.parquet"
    train.to_parquet(path, index=False)  # nanosecond timestamps, as training_features writes
    frame = sx.read_training_matrix(spark, path)
    assert spark.sparkContext.master == cluster.master_url

    on_cluster = sx.train_horizon_spark(frame, TARGET, grid=GRID, n_splits=2, num_workers=2)
    local = train_horizon(
        train[list(f.FEATURE_NAMES)], train[TARGET], train["timestamp"], "xgboost", GRID, 2
    )
    model = on_cluster.model
    assert (model.engine, local.engine) == ("spark", "local")
    assert (
        model.n_train_rows
        == local.n_train_rows
        == int((train[TARGET].notna() & (train[TARGET] != 0.0)).sum())
    )
    assert len(model.residuals) == len(local.residuals)
    assert model.cv_mae == pytest.approx(local.cv_mae, rel=0.01)
    X = test[list(f.FEATURE_NAMES)].to_numpy(dtype="float32")
    mae_cluster = masked_mae(test[TARGET].to_numpy(), model.predict(X))
    mae_local = masked_mae(test[TARGET].to_numpy(), local.predict(X))
    assert mae_cluster == pytest.approx(mae_local, rel=0.01)

    registry = ModelRegistry(tmp_path / "models")
    context = tmp_path / "feature_context.npz"
    simulated[1].save(context)

    def build(folder: Path) -> dict[str, Any]:
        write_bundle(folder, {60: model}, context)
        return {
            "metrics": {"60": {"engine": model.engine, "train_rows": model.n_train_rows}},
            "feature_names": list(f.FEATURE_NAMES),
            "feature_version": f.FEATURE_VERSION,
            "training_data_version": "simulated",
            "lake_partitions": [],
            "kafka_offsets": [],
        }

    version = registry.publish(build)
    onnx = (registry.path(registry.verify(version)["version"]) / onnx_file(60)).read_bytes()
    spark_test = spark.createDataFrame(test[["timestamp", "sensor_id", *f.FEATURE_NAMES, TARGET]])
    forecasts = (
        sx.forecast(on_cluster.spark_model, sx.labelled_rows(spark_test, TARGET))
        .select("timestamp", "sensor_id", sx.FORECAST)
        .toPandas()
    )
    forecasts["timestamp"] = pd.to_datetime(forecasts["timestamp"]).dt.tz_localize(None)
    expected = test.merge(forecasts, on=["timestamp", "sensor_id"], validate="1:1")
    assert len(expected) == len(test)
    served = onnx_predict(onnx, expected[list(f.FEATURE_NAMES)].to_numpy(dtype="float32"))
    np.testing.assert_allclose(served, expected[sx.FORECAST], rtol=0, atol=1e-3)


def split(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows before TEST_DAY, rows of TEST_DAY with a valid target)."""
    train, test = rows[rows["timestamp"] < TEST_DAY], rows[rows["timestamp"] >= TEST_DAY]
    return train, test[test[TARGET].notna() & (test[TARGET] != 0.0)]


@pytest.mark.integration
@pytest.mark.slow
def test_cluster_model_from_the_spark_matrix_matches_the_pandas_matrix(
    spark: SparkSession, rows: pd.DataFrame, lake: LakeResource
) -> None:
    """The matrix Spark computes from the lake's aggregates, trained on the cluster, against
    the pandas matrix of the same days trained in one process: the same rows, CV MAE within
    1 %. The next day's MAE (11,000 rows) is held to 3 %: with each worker subsampling its
    own rows, how the rows fall into partitions alone moves it by up to 1.5 % (measured on
    local[2]: the pandas matrix 3.852, the Spark matrix 3.821, sorted by time 3.796)."""
    train, test = split(rows)
    graph = NetworkResource(dataset=NETWORK).graph()
    matrix = sf.build_training_matrix(spark, lake.path(), graph, DAYS)
    spark_rows = matrix.where(F.col("timestamp") < F.lit(TEST_DAY.to_pydatetime()))
    from_spark = sx.train_horizon_spark(spark_rows, TARGET, grid=GRID, n_splits=2, num_workers=2)
    local = train_horizon(
        train[list(f.FEATURE_NAMES)], train[TARGET], train["timestamp"], "xgboost", GRID, 2
    )
    model = from_spark.model
    assert (model.engine, model.n_train_rows) == ("spark", local.n_train_rows)
    assert len(model.residuals) == len(local.residuals)
    assert model.cv_mae == pytest.approx(local.cv_mae, rel=0.01)
    X = test[list(f.FEATURE_NAMES)].to_numpy(dtype="float32")
    mae_spark_matrix = masked_mae(test[TARGET].to_numpy(), model.predict(X))
    assert mae_spark_matrix == pytest.approx(
        masked_mae(test[TARGET].to_numpy(), local.predict(X)), rel=0.03
    )


@pytest.mark.integration
@pytest.mark.slow
def test_asset_trains_on_the_cluster_past_the_row_threshold(
    cluster: SparkCluster,
    rows: pd.DataFrame,
    lake: LakeResource,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One horizon and one grid point keep it short; the choice is the asset's own, and it
    trains on the matrix Spark computes from the lake's aggregates of the chosen days."""
    monkeypatch.setattr(f, "HORIZONS", {60: 12})
    monkeypatch.setitem(FAMILIES, "xgboost", Family("xgboost", build_xgboost, tuple(GRID)))
    monkeypatch.setenv("SPARK_TRAINING_MIN_ROWS", str(len(rows)))
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    cluster.wait_ready(timeout=120.0)
    result = materialize(
        [candidates.xgboost_model],
        resources={
            "lake": lake,
            "pyspark": build_spark_resource(SparkSettings(master=cluster.master_url)),
            "network": NetworkResource(dataset=NETWORK),
        },
        run_config={"ops": {"xgboost_model": {"config": {"n_splits": 2}}}},
    )
    assert result.success
    [event] = result.asset_materializations_for_node("xgboost_model")
    assert event.metadata["engine"].value == "spark"
    assert event.metadata["spark_master"].value == cluster.master_url
    assert event.metadata["features"].value == "spark"
    assert event.metadata["feature_days"].value == DAYS
    valid = int((rows[TARGET].notna() & (rows[TARGET] != 0.0)).sum())
    assert event.metadata["train_rows"].value == valid
    saved = candidates.load_candidate(lake, "xgboost", 60)
    assert (saved.engine, saved.n_train_rows, saved.params) == ("spark", valid, GRID[0])
