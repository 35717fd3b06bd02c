"""Daily retraining: features, the three candidate families and the published best model."""

from dagster import AssetSelection, DefaultScheduleStatus, ScheduleDefinition, define_asset_job

TRAINING_ENV = {"max_rows": "TRAFFIC_RETRAIN_MAX_ROWS", "n_splits": "TRAFFIC_RETRAIN_N_SPLITS"}
"""Environment variables that shrink the candidates' training in retrain_on_new_data's runs."""

retrain_job = define_asset_job(
    "retrain_models",
    selection=AssetSelection.groups("features", "models"),
    description="Rebuild training features from every aggregated day, retrain and publish.",
)

daily_retrain = ScheduleDefinition(
    name="daily_retrain",
    job=retrain_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Retrain at 03:00 UTC, after the previous day's aggregates are in.",
)
