"""`retrain_on_new_data`: retrain once enough newly aggregated days have arrived.

The daily schedule keeps models fresh in steady state; this sensor reacts to backfills and
replays (e.g. the demo's six days) without waiting for 03:00, and only when the pipeline is
quiet, so a model is never trained on a half-ingested day.
"""

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from sensors.retrain import retrain_job

AGGREGATES = AssetKey("traffic_5min_aggregates")
BEST_MODEL = AssetKey("best_model")
MIN_NEW_DAYS = 1
BUSY = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


@sensor(
    job=retrain_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description=f"Retrains when at least {MIN_NEW_DAYS} aggregated day(s) arrived since the "
    "last published model and no run is queued or in progress.",
)
def retrain_on_new_data(context: SensorEvaluationContext) -> RunRequest | SkipReason:
    instance = context.instance
    last_model = instance.get_latest_materialization_event(BEST_MODEL)
    since = last_model.timestamp if last_model else 0.0
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AGGREGATES, after_timestamp=since), limit=10_000
    ).records
    days = {r.partition_key for r in records if r.partition_key}
    if len(days) < MIN_NEW_DAYS:
        return SkipReason(f"{len(days)} aggregated day(s) since the last model")
    if instance.get_run_records(RunsFilter(statuses=BUSY), limit=1):
        return SkipReason(f"{len(days)} new day(s), waiting for running work to finish")
    newest = max(r.storage_id for r in records)
    return RunRequest(run_key=f"retrain-after-{newest}", tags={"new_days": str(len(days))})
