"""The retrain sensor asks for a run on complete days only (the stream passed them in every
Kafka partition, nothing for them is still running, their aggregates saw their last raw
readings) when one is missing from the last model, and never next to a running retrain."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetMaterialization,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    MetadataValue,
    RunRequest,
    build_sensor_context,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from resources.lake import LakeResource
from sensors.new_data import retrain_on_new_data
from traffic_core.lake import OffsetRange, raw_file_path

D1, D2, D3, D4 = "2012-03-01", "2012-03-02", "2012-03-03", "2012-03-04"


@pytest.fixture
def instance() -> DagsterInstance:
    with DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture
def lake(tmp_path: Path) -> LakeResource:
    return LakeResource(root=str(tmp_path / "lake"))


def tick(instance: DagsterInstance, lake: LakeResource) -> RunRequest | None:
    context = build_sensor_context(instance=instance, resources={"lake": lake})
    result = retrain_on_new_data.evaluate_tick(context)
    return result.run_requests[0] if result.run_requests else None


def ingest(instance: DagsterInstance, lake: LakeResource, day: str, partition: int) -> None:
    """A raw file of `day` from one Kafka partition, and its raw materialization."""
    offsets = OffsetRange("traffic-events", partition, 0, 9)
    path = raw_file_path(lake.path(), date.fromisoformat(day), offsets)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    instance.report_runless_asset_event(AssetMaterialization("raw_traffic_events", partition=day))


def aggregate(instance: DagsterInstance, *days: str) -> None:
    for day in days:
        instance.report_runless_asset_event(
            AssetMaterialization("traffic_5min_aggregates", partition=day)
        )


def add_run(instance: DagsterInstance, job: str, tags: dict[str, str]) -> DagsterRun:
    run = DagsterRun(
        job_name=job, run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED, tags=tags
    )
    return instance.add_run(run)


def check_aggregates(instance: DagsterInstance, day: str, check: str, passed: bool) -> None:
    """A check evaluation on `day`'s latest aggregates, as the aggregation run records it."""
    key = AssetKey("traffic_5min_aggregates")
    storage_ids = instance.get_latest_storage_id_by_partition(
        key, DagsterEventType.ASSET_MATERIALIZATION
    )
    target = AssetCheckEvaluationTargetMaterializationData(
        storage_id=storage_ids[day], run_id="", timestamp=0.0
    )
    instance.report_runless_asset_event(
        AssetCheckEvaluation(key, check, passed, target_materialization_data=target, partition=day)
    )


def training_days(request: RunRequest) -> list[str]:
    return request.run_config["ops"]["training_features"]["config"]["days"]


def test_trains_only_on_days_the_stream_has_passed_in_every_partition(
    instance: DagsterInstance, lake: LakeResource
) -> None:
    assert tick(instance, lake) is None
    for day in (D1, D2, D3):
        ingest(instance, lake, day, partition=0)
    for day in (D1, D2):
        ingest(instance, lake, day, partition=1)
    aggregate(instance, D1, D2, D3)
    assert tick(instance, lake) is None  # partition 1 is still in D2: only D1 is complete

    ingest(instance, lake, D3, partition=1)
    request = tick(instance, lake)  # D3 is aggregated but still being delivered
    assert request is not None and training_days(request) == [D1, D2]
    assert request.tags["new_days"] == "2"
    assert tick(instance, lake).run_key == request.run_key  # same evidence, same run key


def test_a_day_is_incomplete_while_its_runs_go_on_or_its_aggregates_are_older(
    instance: DagsterInstance, lake: LakeResource
) -> None:
    for day in (D1, D2, D3):
        ingest(instance, lake, day, partition=0)
    aggregate(instance, D1, D2)
    ingest(instance, lake, D2, partition=0)  # more of D2 after its aggregation
    assert tick(instance, lake) is None
    aggregate(instance, D2)
    run = add_run(instance, "__ASSET_JOB", {"dagster/partition": D2})
    assert tick(instance, lake) is None  # e.g. D2's share of an offset range being ingested
    instance.report_run_failed(run)
    assert training_days(tick(instance, lake)) == [D1, D2]


def test_waits_for_a_running_retrain_not_for_ingestion_and_then_adds_new_days(
    instance: DagsterInstance, lake: LakeResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    for day in (D1, D2, D3):
        ingest(instance, lake, day, partition=0)
    aggregate(instance, D1, D2, D3)
    add_run(instance, "__ASSET_JOB", {"dagster/partition": D4})  # ingestion goes on
    first = tick(instance, lake)
    assert first is not None and training_days(first) == [D1, D2]

    retrain = add_run(instance, "retrain_models", {})
    assert tick(instance, lake) is None
    instance.report_run_failed(retrain)
    instance.report_runless_asset_event(
        AssetMaterialization(
            "best_model", metadata={"lake_partitions": MetadataValue.json([D1, D2])}
        )
    )
    assert tick(instance, lake) is None  # the model has every complete day

    ingest(instance, lake, D4, partition=0)
    monkeypatch.setenv("TRAFFIC_RETRAIN_MAX_ROWS", "5000")
    later = tick(instance, lake)
    assert later is not None and later.run_key != first.run_key
    assert training_days(later) == [D1, D2, D3] and later.tags["new_days"] == "1"
    assert later.run_config["ops"]["xgboost_model"]["config"] == {"max_rows": 5000}


@pytest.mark.parametrize("check", ["windows_complete", "speeds_in_range"])
def test_a_day_whose_latest_aggregates_failed_a_training_gate_waits_for_a_passing_one(
    instance: DagsterInstance, lake: LakeResource, check: str
) -> None:
    for day in (D1, D2, D3, D4):
        ingest(instance, lake, day, partition=0)
    aggregate(instance, D1, D2, D3)
    check_aggregates(instance, D1, check, passed=True)
    check_aggregates(instance, D2, check, passed=False)
    assert training_days(tick(instance, lake)) == [D1, D3]
    aggregate(instance, D2)  # re-aggregated: the failure was about the older aggregates
    assert training_days(tick(instance, lake)) == [D1, D2, D3]
    check_aggregates(instance, D3, check, passed=False)
    assert training_days(tick(instance, lake)) == [D1, D2]
