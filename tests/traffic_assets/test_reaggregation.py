"""Raw readings of a day that land after the day was aggregated make the automation sensor
aggregate that day again, once, as soon as no run of that raw day is going on, wherever the
late readings come from (ingestion writes readings of other days from a run of its own day).

Dagster's own evaluation runs on a real (ephemeral) instance; stand-ins with the assets' keys
write the materializations, the way ingestion and the Spark aggregation runs would, without
Kafka or Spark.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import (
    AssetCheckResult,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    Config,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    Definitions,
    asset,
    asset_check,
    define_asset_job,
    evaluate_automation_conditions,
    materialize,
)
from dagster._core.events import StepMaterializationData
from dagster_pyspark import LazyPySparkResource
from pydantic import Field

from resources.lake import LakeResource
from traffic_assets.aggregation.assets import traffic_5min_aggregates
from traffic_assets.partitions import daily_partitions

RAW = AssetKey("raw_traffic_events")
AGGREGATES = AssetKey("traffic_5min_aggregates")
D, NEXT = "2012-03-02", "2012-03-03"


class LateDays(Config):
    late_days: list[str] = Field(default_factory=list)


@asset(name="raw_traffic_events", partitions_def=daily_partitions)
def raw_stand_in(context, config: LateDays) -> None:
    """Announces readings of other days the way `raw_traffic_events` does."""
    for day in config.late_days:
        context.log_event(AssetMaterialization(asset_key=context.asset_key, partition=day))


@asset_check(asset=raw_stand_in, partitions_def=daily_partitions, blocking=True)
def raw_speeds_stand_in(context) -> AssetCheckResult:
    """Fails where the run wrote impossible speeds, as `raw_speeds_in_range` would."""
    bad = IMPOSSIBLE.get(context.partition_key, False)
    return AssetCheckResult(passed=not bad)


IMPOSSIBLE: dict[str, bool] = {}
"""Days whose latest ingestion stored impossible speeds (set by `Stack.ingest`)."""


@asset(name="traffic_5min_aggregates", partitions_def=daily_partitions)
def aggregates_stand_in() -> None:
    """What a requested aggregation run leaves in the instance, without Spark."""


class Stack:
    """The automation sensor's ticks over a real instance, and the runs between them."""

    def __init__(self, instance: DagsterInstance, lake: Path) -> None:
        self.instance = instance
        self.cursor = None
        self.defs = Definitions(
            assets=[raw_stand_in, traffic_5min_aggregates],
            asset_checks=[raw_speeds_stand_in],
            jobs=[define_asset_job("ingest", selection=[RAW])],
            resources={
                "pyspark": LazyPySparkResource(spark_config={}),
                "lake": LakeResource(root=str(lake)),
            },
        )

    def tick(self) -> set[str]:
        """Days of aggregates the sensor requests on this tick."""
        result = evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.cursor
        )
        self.cursor = result.cursor
        return result.get_requested_partitions(AGGREGATES)

    def ingest(self, day: str, late: tuple[str, ...] = (), impossible: bool = False) -> None:
        """A finished ingestion run of `day` that also stored readings of the `late` days; with
        `impossible`, its blocking check fails and so does the run."""
        IMPOSSIBLE[day] = impossible
        config = {"ops": {"raw_traffic_events": {"config": {"late_days": list(late)}}}}
        result = materialize(
            [raw_stand_in, raw_speeds_stand_in],
            partition_key=day,
            instance=self.instance,
            run_config=config,
            raise_on_error=False,
        )
        assert result.success is not impossible

    def aggregate(self, day: str) -> None:
        self.run(aggregates_stand_in, day)

    def run(self, stand_in: AssetsDefinition, day: str, **kwargs: object) -> None:
        assert materialize([stand_in], partition_key=day, instance=self.instance, **kwargs).success

    def start_ingestion(self, day: str) -> DagsterRun:
        """An ingestion run of `day` that has started and not finished."""
        return self.instance.create_run_for_job(
            self.defs.resolve_job_def("ingest"),
            asset_selection={RAW},
            tags={"dagster/partition": day},
            status=DagsterRunStatus.STARTED,
        )

    def store(self, run: DagsterRun, day: str) -> None:
        """`run` stores readings of `day` and says so, as ingestion's `log_event` does."""
        materialization = AssetMaterialization(asset_key=RAW, partition=day)
        event = DagsterEvent(
            event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
            job_name=run.job_name,
            step_key="raw_traffic_events",
            event_specific_data=StepMaterializationData(materialization),
        )
        self.instance.report_dagster_event(event, run_id=run.run_id)

    def finish(self, run: DagsterRun) -> None:
        self.instance.report_run_failed(run)  # any end will do: only "in progress" matters


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with DagsterInstance.ephemeral() as instance:
        stack = Stack(instance, tmp_path)
        assert stack.tick() == set()
        stack.ingest(D)
        assert stack.tick() == {D}
        yield stack


def test_a_day_is_aggregated_once_when_nothing_lands_late(stack: Stack) -> None:
    stack.aggregate(D)
    assert stack.tick() == set()
    assert stack.tick() == set()


def test_late_readings_landing_before_the_next_tick_aggregate_the_day_again(stack: Stack) -> None:
    """The soak's case: the aggregation run ends, late readings of its day land, then a tick."""
    stack.aggregate(D)
    stack.ingest(NEXT, late=(D,))
    assert stack.tick() == {D, NEXT}
    stack.aggregate(D)
    stack.aggregate(NEXT)
    assert stack.tick() == set()


def test_late_readings_landing_after_a_tick_aggregate_the_day_again(stack: Stack) -> None:
    stack.aggregate(D)
    assert stack.tick() == set()
    stack.ingest(NEXT, late=(D,))
    assert stack.tick() == {D, NEXT}
    assert stack.tick() == set()


def test_readings_landing_while_the_day_is_aggregated_aggregate_it_again(stack: Stack) -> None:
    """The run requested on the previous tick may have listed the raw files before they came."""
    stack.ingest(NEXT, late=(D,))
    stack.aggregate(D)
    assert stack.tick() == {D, NEXT}
    assert stack.tick() == set()


def test_late_readings_are_aggregated_while_the_next_day_is_still_ingested(stack: Stack) -> None:
    """Runs of the current day keep going on while they store readings of the previous one."""
    stack.aggregate(D)
    first = stack.start_ingestion(NEXT)
    stack.store(first, D)
    assert stack.tick() == {D}
    stack.store(first, NEXT)
    second = stack.start_ingestion(NEXT)
    stack.finish(first)
    stack.store(second, D)
    assert stack.tick() == {D}
    stack.finish(second)
    assert stack.tick() == {NEXT}
    assert stack.tick() == set()


def test_a_day_is_not_aggregated_while_its_own_ingestion_goes_on(stack: Stack) -> None:
    stack.aggregate(D)
    stack.ingest(NEXT, late=(D,))
    running = stack.start_ingestion(D)
    assert stack.tick() == {NEXT}
    assert stack.tick() == set()
    stack.store(running, D)
    stack.finish(running)
    assert stack.tick() == {D}
    assert stack.tick() == set()


def test_late_readings_stored_during_the_days_own_run_are_aggregated_after_it_too(
    stack: Stack,
) -> None:
    """Dagster counts a day in progress only until the next materialization of it, whichever run
    logs it: the day is then aggregated alongside its run, and again once the run stores."""
    stack.aggregate(D)
    running = stack.start_ingestion(D)
    stack.ingest(NEXT, late=(D,))
    assert stack.tick() == {D, NEXT}
    stack.aggregate(D)
    stack.store(running, D)
    stack.finish(running)
    assert stack.tick() == {D}
    assert stack.tick() == set()


def test_a_raw_day_failing_a_blocking_check_is_not_aggregated_until_a_run_passes(
    stack: Stack,
) -> None:
    stack.aggregate(D)
    stack.ingest(NEXT, impossible=True)
    assert stack.tick() == set()
    assert stack.tick() == set()
    stack.ingest(NEXT)
    assert stack.tick() == {NEXT}
    assert stack.tick() == set()
