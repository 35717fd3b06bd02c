"""What starts runs: the Kafka offset sensors (readings, incidents, weather), automation, the
new-data and daily retrains."""

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
)

from sensors.kafka_offsets import (
    incidents_offsets_sensor,
    kafka_offsets_sensor,
    weather_offsets_sensor,
)
from sensors.new_data import retrain_on_new_data
from sensors.retrain import daily_retrain, retrain_job
from sensors.stream_observation import observe_stream_job, observe_stream_schedule

automation_sensor = AutomationConditionSensorDefinition(
    "automation_sensor",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Materializes assets whose automation conditions are met (e.g. aggregates "
    "after new raw partitions).",
)

defs = Definitions(
    sensors=[
        kafka_offsets_sensor,
        incidents_offsets_sensor,
        weather_offsets_sensor,
        automation_sensor,
        retrain_on_new_data,
    ],
    schedules=[daily_retrain, observe_stream_schedule],
    jobs=[retrain_job, observe_stream_job],
)
