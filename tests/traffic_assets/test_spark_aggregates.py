"""Spark aggregates equal the core definition and the source data; the Dagster asset and its
checks run for a real partition, a rerun replaces it identically, and a new raw partition of any
day triggers it.

The six real METR-LA days go into a temporary lake as raw offset-range files, the way ingestion
writes them, with injected missing readings, corrected resends and plain duplicates.
"""

import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    asset,
    evaluate_automation_conditions,
    materialize,
)
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import SparkSession
from spark_helpers import local_spark

from resources.lake import LakeResource
from resources.network import NetworkResource
from resources.spark import spark_config
from traffic_assets.aggregation import checks
from traffic_assets.aggregation.assets import traffic_5min_aggregates
from traffic_assets.aggregation.spark_windows import aggregate_with_spark
from traffic_assets.partitions import daily_partitions
from traffic_core import windows as w
from traffic_core.datasets import load_speed_csv
from traffic_core.lake import RAW_ZONE, OffsetRange, raw_files, read_raw_day, write_raw_range
from traffic_core.reference import sensors_table_path
from traffic_core.settings import SparkSettings

TOPIC = "traffic-events"
PARTITIONS = 4
RANGE_SIZE = 25_000
DAY = "2012-03-01"
CHECKS = [checks.windows_complete, checks.speeds_in_range, checks.missing_share_low]
FLOATS = ["speed_mean", "speed_min", "speed_max", "speed_std", "share_missing"]


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    yield from local_spark()


@pytest.fixture(scope="module")
def csv_speeds(shared_data: Path) -> pd.DataFrame:
    """The source CSV in float64 (the platform loader rounds to float32), UTC index."""
    path = shared_data / "metr-la" / "los_loop_speed_2012-03-01_to_03-06.csv"
    wide = pd.read_csv(path, dtype=np.float64)
    loaded = load_speed_csv(path)
    wide.index = loaded.index.tz_localize("UTC")
    np.testing.assert_allclose(loaded.to_numpy(), wide.to_numpy(), rtol=1e-6)
    return wide


@pytest.fixture(scope="module")
def missing_mask(csv_speeds: pd.DataFrame) -> np.ndarray:
    return np.random.default_rng(1).random(csv_speeds.shape) < 0.01


@pytest.fixture(scope="module")
def lake(
    tmp_path_factory: pytest.TempPathFactory, csv_speeds: pd.DataFrame, missing_mask: np.ndarray
) -> Path:
    """Raw zone of the six days: 1% missing readings, 0.5% first sent wrong then corrected by a
    resend (higher offset), 0.5% resent unchanged; offset ranges straddle day boundaries."""
    root = tmp_path_factory.mktemp("lake")
    rng = np.random.default_rng(2)
    n_t, n_s = csv_speeds.shape
    truth = np.where(missing_mask, np.nan, csv_speeds.to_numpy()).ravel()
    stream = pd.DataFrame(
        {
            "sensor_id": np.tile(csv_speeds.columns.to_numpy(dtype=object), n_t),
            "event_time": np.repeat(csv_speeds.index, n_s),
            "speed_mph": truth,
            "kafka_partition": np.tile(np.arange(n_s) % PARTITIONS, n_t).astype(np.int32),
        }
    )
    corrected = rng.random(len(stream)) < 0.005
    resent = ~corrected & (rng.random(len(stream)) < 0.005)
    first_sent = stream.assign(speed_mph=np.where(corrected, truth + 13.0, truth))
    stream = pd.concat([first_sent, stream[corrected | resent]], ignore_index=True)
    stream["kafka_offset"] = stream.groupby("kafka_partition").cumcount().astype(np.int64)
    stream = stream.assign(
        volume=pd.array([None] * len(stream), dtype="Int32"),
        occupancy=np.nan,
        source="metr-la",
        is_synthetic=False,
        kafka_topic=TOPIC,
        ingest_run_id="test",
        ingest_id=np.where(stream.index < len(first_sent), "ingest-first", "ingest-resend"),
    )
    for partition, rows in stream.groupby("kafka_partition"):
        for first in range(0, len(rows), RANGE_SIZE):
            chunk = rows.iloc[first : first + RANGE_SIZE]
            offsets = OffsetRange(TOPIC, int(partition), first, first + len(chunk) - 1)
            write_raw_range(root, offsets, chunk)
    for path in raw_files(root):  # partition 0 as written before raw files had ingest ids
        if "partition=000" in str(path):
            pq.write_table(pq.read_table(path).drop_columns(["ingest_id"]), path)
    return root


def days(csv_speeds: pd.DataFrame) -> list[date]:
    return sorted(set(csv_speeds.index.date))


def normalised(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.assign(window_start=w.to_utc(frame["window_start"]).astype("datetime64[ns, UTC]"))
    out = out.astype({"reading_count": "int64", "valid_count": "int64"})
    return out.sort_values(["sensor_id", "window_start"]).reset_index(drop=True)


def assert_same_aggregates(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    a, e = normalised(actual), normalised(expected)
    assert list(a.columns) == w.AGGREGATE_COLUMNS == list(e.columns)
    assert len(a) == len(e)
    for column in w.AGGREGATE_COLUMNS:
        if column in FLOATS:
            np.testing.assert_allclose(a[column], e[column], rtol=0, atol=1e-9, err_msg=column)
        else:
            pd.testing.assert_series_equal(a[column], e[column], check_dtype=False)


@pytest.fixture(scope="module")
def six_day_aggregates(spark: SparkSession, lake: Path) -> pd.DataFrame:
    started = time.perf_counter()
    out = aggregate_with_spark(spark, lake / RAW_ZONE).toPandas()
    print(f"spark: six days, {len(out)} windows in {time.perf_counter() - started:.1f}s")
    return out


@pytest.mark.integration
def test_spark_equals_core_definition_on_six_real_days(
    six_day_aggregates: pd.DataFrame, lake: Path, csv_speeds: pd.DataFrame
) -> None:
    raw = pd.concat([read_raw_day(lake, d) for d in days(csv_speeds)], ignore_index=True)
    assert len(raw) > csv_speeds.size  # the resends are there
    assert_same_aggregates(six_day_aggregates, w.aggregate_windows(raw))


@pytest.mark.integration
def test_aggregates_equal_the_source_csv(
    six_day_aggregates: pd.DataFrame, csv_speeds: pd.DataFrame, missing_mask: np.ndarray
) -> None:
    """One reading per slot, so each window's mean is the CSV value (NaN where injected missing)."""
    out = normalised(six_day_aggregates)
    assert len(out) == csv_speeds.size
    assert (out["reading_count"] == 1).all()
    cells = out.pivot(index="window_start", columns="sensor_id")
    expected = csv_speeds.mask(missing_mask)

    def cell(column: str) -> np.ndarray:
        return cells[column].reindex(index=expected.index, columns=expected.columns).to_numpy()

    np.testing.assert_array_equal(cell("speed_mean"), expected.to_numpy())
    assert out["speed_std"].isna().all()
    caltrans = pd.cut(
        expected.to_numpy().ravel(),
        [-np.inf, 35.0, 60.0, np.inf],
        right=False,
        labels=[w.SEVERE, w.CONGESTED, w.FREE_FLOW],
    )
    expected_classes = pd.Series(caltrans).astype(object).fillna(w.UNKNOWN).to_numpy()
    np.testing.assert_array_equal(cell("congestion"), expected_classes.reshape(expected.shape))
    assert out["quality_flag"].value_counts().to_dict() == {
        w.OK: int((~missing_mask).sum()),
        w.MISSING: int(missing_mask.sum()),
    }


@pytest.mark.integration
def test_spark_equals_core_on_windows_with_many_readings(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Readings every 30 s with gaps, noise, a stuck detector and resends: every flag occurs."""
    rng = np.random.default_rng(3)
    stamps = pd.date_range("2012-03-02 22:00", "2012-03-03 02:00", freq="30s", tz="UTC")
    sensors = [f"s{i:02d}" for i in range(12)]
    rows = pd.DataFrame(
        {
            "sensor_id": np.repeat(sensors, len(stamps)).astype(object),
            "event_time": np.tile(stamps, len(sensors)),
        }
    )
    base = rng.uniform(20.0, 70.0, len(rows))
    noise = np.where(rows["sensor_id"] == "s00", 40.0, 3.0) * rng.standard_normal(len(rows))
    speed = np.where(rows["sensor_id"] == "s01", 55.0, np.clip(base + noise, 0.0, 110.0))
    rows["speed_mph"] = np.where(rng.random(len(rows)) < 0.15, np.nan, speed)
    rows.loc[rows["sensor_id"] == "s02", "speed_mph"] = np.nan
    resends = rows.sample(frac=0.1, random_state=4).assign(speed_mph=lambda f: f.speed_mph + 1)
    rows = pd.concat([rows, resends], ignore_index=True).assign(
        kafka_offset=lambda f: np.arange(len(f), dtype=np.int64),
        kafka_partition=np.int32(0),
        volume=lambda f: pd.array([None] * len(f), dtype="Int32"),
        occupancy=np.nan,
        source="test",
        is_synthetic=True,
        kafka_topic=TOPIC,
        ingest_run_id="test",
    )
    write_raw_range(tmp_path, OffsetRange(TOPIC, 0, 0, len(rows) - 1), rows)

    actual = aggregate_with_spark(spark, raw_files(tmp_path)).toPandas()
    expected = w.aggregate_windows(rows)
    assert_same_aggregates(actual, expected)
    assert set(expected["quality_flag"]) == set(w.QUALITY_FLAGS)
    assert (expected["valid_count"] >= 2).any()


def run_partition(lake: Path, partition: str, **kwargs: Any) -> ExecuteInProcessResult:
    resources = {
        "pyspark": LazyPySparkResource(spark_config=spark_config(SparkSettings())),
        "lake": LakeResource(root=str(lake)),
        "network": NetworkResource(),
    }
    return materialize(
        [traffic_5min_aggregates, *CHECKS], partition_key=partition, resources=resources, **kwargs
    )


@pytest.fixture(scope="module")
def first_run(
    spark: SparkSession, lake: Path, csv_speeds: pd.DataFrame
) -> tuple[ExecuteInProcessResult, pd.DataFrame]:
    sensors = pd.DataFrame({"sensor_id": csv_speeds.columns})
    reference = sensors_table_path(lake, "metr-la")
    reference.parent.mkdir(parents=True)
    sensors.to_parquet(reference, index=False)
    started = time.perf_counter()
    result = run_partition(lake, DAY)
    print(
        f"dagster: partition {DAY} materialized with checks in {time.perf_counter() - started:.1f}s"
    )
    return result, pd.read_parquet(LakeResource(root=str(lake)).aggregates_file(DAY))


@pytest.mark.integration
def test_asset_materializes_a_day_and_checks_pass(
    first_run: tuple[ExecuteInProcessResult, pd.DataFrame], lake: Path
) -> None:
    result, written = first_run
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == {k.name for c in CHECKS for k in c.check_keys}
    assert all(e.passed for e in evaluations), [(e.check_name, e.metadata) for e in evaluations]
    coverage = next(e for e in evaluations if e.check_name == "windows_complete").metadata
    assert coverage["sensor_source"].value == "reference"

    [event] = result.asset_materializations_for_node("traffic_5min_aggregates")
    meta = {k: getattr(v, "value", v) for k, v in event.metadata.items()}
    assert meta["dagster/row_count"] == w.WINDOWS_PER_DAY * 207 == len(written)
    assert (meta["sensors"], meta["windows"]) == (207, w.WINDOWS_PER_DAY)
    assert sum(meta[f"congestion_{c}"] for c in w.CONGESTION_CLASSES) == len(written)
    assert 0 < meta["share_missing"] < 0.02
    raw = read_raw_day(lake, date(2012, 3, 1))
    assert_same_aggregates(written, w.aggregate_windows(raw))
    by_id = raw["ingest_id"].fillna("none").value_counts()
    assert meta["ingest_ids"] == [
        {"ingest_id": "ingest-first", "readings": by_id["ingest-first"]},
        {"ingest_id": "ingest-resend", "readings": by_id["ingest-resend"]},
        {"ingest_id": None, "readings": by_id["none"]},  # the files without the column
    ]


@pytest.mark.integration
def test_rerun_replaces_the_partition_identically(
    first_run: tuple[ExecuteInProcessResult, pd.DataFrame], lake: Path
) -> None:
    _, before = first_run
    assert run_partition(lake, DAY).success
    path = LakeResource(root=str(lake)).aggregates_file(DAY)
    pd.testing.assert_frame_equal(pd.read_parquet(path), before)
    assert [p.name for p in path.parent.iterdir()] == ["part.parquet"]
    assert [p.name for p in path.parent.parent.iterdir()] == [f"date={DAY}"]


def test_a_day_without_raw_data_fails_with_a_clear_message(tmp_path: Path) -> None:
    result = run_partition(tmp_path, "2012-03-09", raise_on_error=False)
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert "no raw readings for 2012-03-09" in str(failure.event_specific_data)
    assert not LakeResource(root=str(tmp_path)).aggregates_file("2012-03-09").exists()


def test_a_new_raw_partition_of_an_old_day_triggers_its_aggregates(tmp_path: Path) -> None:
    @asset(partitions_def=daily_partitions)
    def raw_traffic_events() -> None:
        """Stand-in for the ingestion asset: only its materializations matter here."""

    defs = Definitions(
        assets=[raw_traffic_events, traffic_5min_aggregates],
        asset_checks=CHECKS,
        resources={
            "pyspark": LazyPySparkResource(spark_config={}),
            "lake": LakeResource(root=str(tmp_path)),
            "network": NetworkResource(),
        },
    )
    instance = DagsterInstance.ephemeral()
    first = evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0
    assert materialize([raw_traffic_events], partition_key="2012-03-02", instance=instance).success
    second = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    requested = second.get_requested_partitions(AssetKey("traffic_5min_aggregates"))
    assert requested == {"2012-03-02"}
