"""The Dagster code location: every asset, check, sensor and schedule of the platform."""

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
    in_process_executor,
    load_asset_checks_from_modules,
    load_assets_from_modules,
)

from resources import build_resources
from sensors.kafka_offsets import kafka_offsets_sensor
from sensors.new_data import retrain_on_new_data
from sensors.retrain import daily_retrain, retrain_job
from traffic_assets.aggregation import assets as aggregation
from traffic_assets.aggregation import checks as aggregation_checks
from traffic_assets.ingestion import assets as ingestion
from traffic_assets.ingestion import checks as ingestion_checks
from traffic_assets.models import baselines, best_model, candidates, training_data
from traffic_assets.reference import sensor_graph

automation_sensor = AutomationConditionSensorDefinition(
    "automation_sensor",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Materializes assets whose automation conditions are met (e.g. aggregates "
    "after new raw partitions).",
)

defs = Definitions(
    assets=load_assets_from_modules(
        [sensor_graph, ingestion, aggregation, training_data, candidates, baselines, best_model]
    ),
    asset_checks=load_asset_checks_from_modules([ingestion_checks, aggregation_checks]),
    sensors=[kafka_offsets_sensor, automation_sensor, retrain_on_new_data],
    schedules=[daily_retrain],
    jobs=[retrain_job],
    resources=build_resources(),
    # One process per run, not per step: a step subprocess spends 20-35 s importing the code
    # location on these 2 cores to do about a second of work (an ingestion run with its four
    # checks took 128 s, 4 s of it working). Steps of a run still use every core themselves
    # (Spark, XGBoost, forests).
    executor=in_process_executor,
)
