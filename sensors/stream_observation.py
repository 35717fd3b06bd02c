"""Observe the stream processor's output every five minutes, so the asset graph shows its
progress (records, newest window, lag) without anyone asking."""

from dagster import AssetSelection, DefaultScheduleStatus, ScheduleDefinition, define_asset_job

from traffic_assets.streams.aggregates_stream import traffic_aggregates_stream

observe_stream_job = define_asset_job(
    "observe_aggregates_stream", selection=AssetSelection.assets(traffic_aggregates_stream.key)
)

observe_stream_schedule = ScheduleDefinition(
    job=observe_stream_job,
    cron_schedule="*/5 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Observes traffic_aggregates_stream: one Kafka metadata query and a few reads.",
)
