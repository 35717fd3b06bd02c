"""A tiny code location for tests/infra/test_postgres_resilience.py: a sensor that asks for one run
per new item of a feed, the way the Kafka offsets sensor asks for one per offset range.

The feed is a file holding how many items exist (the test raises it while it runs); the
cursor is the last item planned and `step-<n>` the run key, so a tick whose cursor update was
lost re-plans the same steps and Dagster's run-key check keeps them from running twice.
"""

# No `from __future__ import annotations`: Dagster reads the op's config annotation.
import os
import time
from pathlib import Path

from dagster import (
    AssetMaterialization,
    Config,
    DefaultSensorStatus,
    Definitions,
    OpExecutionContext,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    in_process_executor,
    job,
    op,
    sensor,
)

FEED_FILE_VARIABLE = "RESILIENCE_FEED_FILE"
HOLD_STEP_VARIABLE = "RESILIENCE_HOLD_STEP"
STEP_ASSET = "resilience_step"


def held_marker(feed: Path) -> Path:
    """Written by the held step once it runs; the test stops PostgreSQL then."""
    return feed.with_name("held")


def release_marker(feed: Path) -> Path:
    """Written by the test while PostgreSQL is down; the held step then finishes, so its
    run writes its last events into the outage."""
    return feed.with_name("release")


def run_key(step: int) -> str:
    return f"step-{step}"


class StepConfig(Config):
    step: int


@op
def record_step(context: OpExecutionContext, config: StepConfig) -> None:
    """Writes one materialization per step: the event log entry the test looks for."""
    if config.step == int(os.environ.get(HOLD_STEP_VARIABLE, "0")):
        feed = Path(os.environ[FEED_FILE_VARIABLE])
        held_marker(feed).write_text(context.run_id)
        deadline = time.monotonic() + 120
        while not release_marker(feed).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    context.log_event(
        AssetMaterialization(
            asset_key=STEP_ASSET, partition=str(config.step), metadata={"step": config.step}
        )
    )


@job(executor_def=in_process_executor)
def step_job() -> None:
    record_step()


def available_items() -> int:
    feed = Path(os.environ[FEED_FILE_VARIABLE])
    text = feed.read_text().strip() if feed.exists() else ""
    return int(text or 0)


@sensor(job=step_job, minimum_interval_seconds=1, default_status=DefaultSensorStatus.RUNNING)
def feed_sensor(context: SensorEvaluationContext) -> SensorResult:
    planned = int(context.cursor or 0)
    available = available_items()
    requests = [
        RunRequest(
            run_key=run_key(step),
            run_config={"ops": {"record_step": {"config": {"step": step}}}},
            tags={"resilience/step": str(step)},
        )
        for step in range(planned + 1, available + 1)
    ]
    return SensorResult(run_requests=requests, cursor=str(max(planned, available)))


defs = Definitions(jobs=[step_job], sensors=[feed_sensor])
