"""Spark features equal the one pandas feature function on real METR-LA days, and the Spark
training matrix equals the pandas one (`training_frame`: profile of the other days, targets).

The real days go into a temporary lake as 5-minute aggregates (core rules, the Spark asset's
layout) with readings knocked out, a 0 mph marker and a window absent for every sensor. Spark
computes features from that lake and writes them per day; the pandas reference is
`make_features` over the same aggregates read as training reads them (`speed_grid`), with the
profile fitted on the training days. Both compute in float64 from the same float64 aggregates,
so values must agree within 1e-6 mph absolute (the order of sums differs) and missing must
stay missing on both sides.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import materialize
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import SparkSession
from spark_helpers import local_spark, write_aggregates

from resources.lake import LakeResource
from resources.network import NetworkResource
from resources.spark import spark_config
from traffic_assets.models import spark_features as sf
from traffic_assets.models.spark_training_features import spark_training_features
from traffic_assets.models.training_data import speed_grid
from traffic_core import features as f
from traffic_core.context_features import CONTEXT_FEATURE_NAMES
from traffic_core.datasets import SensorGraph, load_metr_la_graph, load_speed_csv
from traffic_core.lake import (
    aggregates_file,
    day_folder,
    spark_features_day_dir,
    spark_features_dir,
)
from traffic_core.models import training_frame
from traffic_core.settings import SparkSettings

SIX_DAYS = "metr-la/los_loop_speed_2012-03-01_to_03-06.csv"
DAYS = ["2012-03-01", "2012-03-02", "2012-03-03", "2012-03-04", "2012-03-05", "2012-03-06"]
TRAIN_DAYS = DAYS[:5]
SATURDAY = "2012-03-03"
TOLERANCE = 1e-6
TRAIN_END = "2012-03-05 23:55"
KEYS = ["timestamp", "sensor_id"]


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    yield from local_spark()


@pytest.fixture(scope="module")
def graph(shared_data: Path) -> SensorGraph:
    return load_metr_la_graph(shared_data / "metr-la")


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Aggregates of the six days with 5 % of readings missing, one sensor silent for 90
    minutes and one all Saturday, a 0 mph marker, and one window absent for every sensor."""
    speeds = load_speed_csv(shared_data / SIX_DAYS)
    rng = np.random.default_rng(11)
    speeds = speeds.mask(rng.random(speeds.shape) < 0.05)
    speeds.loc["2012-03-03 16:00":"2012-03-03 17:25", "773869"] = np.nan
    speeds.loc[SATURDAY, "717447"] = np.nan
    speeds.loc["2012-03-04 09:00", "767541"] = 0.0
    speeds = speeds.drop(pd.Timestamp("2012-03-05 12:00"))
    root = tmp_path_factory.mktemp("lake")
    write_aggregates(root, speeds, DAYS)
    return root


@pytest.fixture(scope="module")
def pandas_features(lake_root: Path, graph: SensorGraph) -> pd.DataFrame:
    """The reference: `make_features` over the aggregates as training reads them."""
    grid, _ = speed_grid(LakeResource(root=str(lake_root)), DAYS)
    started = time.perf_counter()
    context = f.FeatureContext.from_graph(graph, f.fit_profile(grid.loc[:TRAIN_END]))
    frame = f.make_features(grid, context)
    print(f"pandas: {len(frame)} feature rows in {time.perf_counter() - started:.1f}s")
    return frame


@pytest.fixture(scope="module")
def spark_features(spark: SparkSession, lake_root: Path, graph: SensorGraph) -> pd.DataFrame:
    """What Spark wrote to the lake's features zone, in the reference's row order."""
    started = time.perf_counter()
    sf.build_feature_days(spark, lake_root, graph, DAYS, TRAIN_DAYS)
    print(f"spark: six days of features written in {time.perf_counter() - started:.1f}s")
    return written_features(spark_features_dir(lake_root), graph)


def written_features(folder: Path, graph: SensorGraph) -> pd.DataFrame:
    """Feature rows under a folder of the Spark features zone, ordered by time, then sensor in
    the graph's order (the `make_features` order)."""
    frame = pd.read_parquet(folder)
    frame = frame.drop(columns=sf.DAY_COLUMN, errors="ignore")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"]).dt.tz_convert(None)
    order = frame["sensor_id"].map({s: i for i, s in enumerate(graph.sensor_ids)})
    return frame.iloc[np.lexsort((order, frame["timestamp"]))].reset_index(drop=True)


def assert_same_values(actual: pd.DataFrame, expected: pd.DataFrame, names: list[str]) -> None:
    """Null where the reference is NaN, within TOLERANCE elsewhere, column by column."""
    for name in names:
        a, e = actual[name].to_numpy(dtype="float64"), expected[name].to_numpy(dtype="float64")
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg=f"{name}: missing")
        np.testing.assert_allclose(a, e, rtol=0, atol=TOLERANCE, err_msg=name)


def test_spark_features_are_the_feature_names(spark: SparkSession) -> None:
    assert tuple(sf.feature_columns()) == f.FEATURE_NAMES


def test_context_features_exist_in_pandas_only(spark: SparkSession) -> None:
    """The incident and weather columns have a declaration of their own, joined in pandas by
    `training_features`; Spark computes `FEATURE_NAMES` and none of them, so the equality
    below covers every column both sides have."""
    assert not set(CONTEXT_FEATURE_NAMES) & set(sf.feature_columns())
    assert not set(CONTEXT_FEATURE_NAMES) & set(f.FEATURE_NAMES)


@pytest.mark.parametrize(
    "names",
    [(*f.FEATURE_NAMES, "speed_lag12"), f.FEATURE_NAMES[:-1]],
    ids=["added in pandas only", "removed in pandas only"],
)
def test_a_feature_on_one_side_only_is_refused(
    spark: SparkSession, monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]
) -> None:
    monkeypatch.setattr(f, "FEATURE_NAMES", names)
    with pytest.raises(ValueError, match="Spark features differ from FEATURE_NAMES"):
        sf.feature_columns()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("train_days", "silent_sensors"),
    [(TRAIN_DAYS, 0), ([SATURDAY], 1)],
    ids=["Thursday to Monday: day-type fallback", "a Saturday: every fallback, a silent sensor"],
)
def test_spark_profile_equals_fit_profile(
    spark: SparkSession,
    lake_root: Path,
    graph: SensorGraph,
    train_days: list[str],
    silent_sensors: int,
) -> None:
    grid, _ = speed_grid(LakeResource(root=str(lake_root)), train_days)
    expected = f.fit_profile(grid).reindex(columns=graph.sensor_ids)
    files = [str(aggregates_file(lake_root, day)) for day in train_days]
    profile = sf.fit_profile(sf.read_speeds(spark, files), graph.sensor_ids).toPandas()
    actual = profile.pivot(index="week_slot", columns="sensor_id", values="profile")
    actual = actual.reindex(index=expected.index, columns=expected.columns)
    assert expected.isna().all().sum() == silent_sensors
    assert_same_values(actual, expected, list(expected.columns))


@pytest.mark.integration
@pytest.mark.slow
def test_spark_features_equal_pandas_on_six_real_days(
    spark_features: pd.DataFrame, pandas_features: pd.DataFrame
) -> None:
    assert list(spark_features.columns) == [*KEYS, *f.FEATURE_NAMES]
    assert len(spark_features) == len(pandas_features) == (len(DAYS) * 288) * 207
    pd.testing.assert_frame_equal(
        spark_features[KEYS], pandas_features[KEYS], check_dtype=False, check_index_type=False
    )
    assert_same_values(spark_features, pandas_features, list(f.FEATURE_NAMES))
    missing = pandas_features[list(f.FEATURE_NAMES)].isna().sum()
    assert (
        missing[["speed_lag0", "std_15min", "upstream2_deviation", "profile_deviation"]] > 0
    ).all()
    assert (missing < len(pandas_features)).all()


@pytest.mark.integration
@pytest.mark.slow
def test_features_are_written_per_day(spark_features: pd.DataFrame, lake_root: Path) -> None:
    folders = sorted(p.name for p in spark_features_dir(lake_root).iterdir() if p.is_dir())
    assert folders == [day_folder(day) for day in DAYS]
    first = pd.read_parquet(spark_features_dir(lake_root) / day_folder(DAYS[0]))
    stamps = pd.to_datetime(first["timestamp"]).dt.tz_convert(None)
    assert (stamps.dt.normalize() == pd.Timestamp(DAYS[0])).all()
    assert len(first) == 288 * 207


def test_days_without_aggregates_are_refused(
    spark: SparkSession, lake_root: Path, graph: SensorGraph
) -> None:
    with pytest.raises(
        ValueError, match=r"days without aggregates: \['2012-03-07', '2012-03-08'\]"
    ):
        sf.build_feature_days(spark, lake_root, graph, [*DAYS, "2012-03-07"], ["2012-03-08"])


@pytest.mark.integration
@pytest.mark.slow
def test_asset_rewrites_the_chosen_days_only(
    spark_features: pd.DataFrame,
    pandas_features: pd.DataFrame,
    lake_root: Path,
    graph: SensorGraph,
) -> None:
    """Two days apart again through the asset: their folders replaced, the others kept (the
    day between them is on the grid, but nobody asked for it), and the first day's numbers
    the same (it starts the data, so its lags see nothing earlier either way)."""
    before = {p.name: p.stat().st_mtime_ns for p in spark_features_dir(lake_root).iterdir()}
    chosen = [DAYS[0], DAYS[2]]
    result = materialize(
        [spark_training_features],
        resources={
            "pyspark": LazyPySparkResource(spark_config=spark_config(SparkSettings())),
            "lake": LakeResource(root=str(lake_root)),
            "network": NetworkResource(),
        },
        run_config={
            "ops": {
                "spark_training_features": {"config": {"days": chosen, "train_days": TRAIN_DAYS}}
            }
        },
    )
    assert result.success
    [event] = result.asset_materializations_for_node("spark_training_features")
    assert event.metadata["dagster/row_count"].value == len(chosen) * 288 * 207
    after = {p.name: p.stat().st_mtime_ns for p in spark_features_dir(lake_root).iterdir()}
    assert sorted(after) == sorted(before)
    changed = sorted(name for name in after if after[name] != before[name])
    assert changed == [day_folder(day) for day in chosen]
    for day in chosen[:1]:
        actual = written_features(spark_features_day_dir(lake_root, day), graph)
        expected = pandas_features[pandas_features["timestamp"].dt.normalize() == pd.Timestamp(day)]
        assert len(actual) == len(expected)
        assert_same_values(actual, expected.reset_index(drop=True), list(f.FEATURE_NAMES))


def pandas_training_matrix(lake_root: Path, graph: SensorGraph, days: list[str]) -> pd.DataFrame:
    """The reference: the matrix `training_features` writes for these days."""
    grid, _ = speed_grid(LakeResource(root=str(lake_root)), days)
    sensors = graph.subgraph([s for s in graph.sensor_ids if s in grid.columns])
    return training_frame(grid, f.FeatureContext.from_graph(sensors, f.fit_profile(grid)))


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(
    ("days", "sensors"),
    [(DAYS, 40), ([DAYS[0], DAYS[1], DAYS[3], DAYS[5]], 40)],
    ids=["six real days", "four of them, with gaps"],
)
def test_spark_training_matrix_equals_pandas(
    spark: SparkSession, lake_root: Path, graph: SensorGraph, days: list[str], sensors: int
) -> None:
    """Every day's profile from the other days (weekday, day type and any-day fallbacks all
    taken: six days hold each weekday once) and every horizon's target, the same rows; days
    missing between the chosen ones give no rows, and the day after one starts without lags.
    The graph's first 40 sensors (their own links): all 207 give the same result but take
    minutes of Spark on two shared cores."""
    graph = graph.subgraph(graph.sensor_ids[:sensors])
    started = time.perf_counter()
    expected = pandas_training_matrix(lake_root, graph, days)
    middle = time.perf_counter()
    actual = sf.build_training_matrix(spark, lake_root, graph, days).toPandas()
    print(
        f"training matrix: pandas {middle - started:.1f}s, "
        f"spark {time.perf_counter() - middle:.1f}s, {len(expected)} rows"
    )
    actual["timestamp"] = pd.to_datetime(actual["timestamp"]).dt.tz_localize(None)
    order = actual["sensor_id"].map({s: i for i, s in enumerate(graph.sensor_ids)})
    actual = actual.iloc[np.lexsort((order, actual["timestamp"]))].reset_index(drop=True)
    targets = [f.target_column(steps) for steps in f.HORIZONS.values()]
    assert list(actual.columns) == [*KEYS, *f.FEATURE_NAMES, *targets]
    assert len(expected) == len(days) * 288 * sensors
    pd.testing.assert_frame_equal(
        actual[KEYS], expected[KEYS], check_dtype=False, check_index_type=False
    )
    assert_same_values(actual, expected, [*f.FEATURE_NAMES, *targets])
    missing = expected[["speed_lag11", "upstream_deviation", *targets]].isna().sum()
    assert (missing > 0).all() and (missing < len(expected)).all()
