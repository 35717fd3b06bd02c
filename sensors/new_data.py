"""`retrain_on_new_data`: retrain once a complete day arrived that the latest model lacks.

The daily schedule keeps models fresh in steady state; this sensor reacts to new days of a
replay or of a fast stream without waiting for 03:00. It asks for a run when the complete
days (`traffic_assets.models.complete_days`: the stream's watermark has passed them, and their
ingestion and aggregation are done) include one that the last published model was not trained
on, and pins those days in the run's config, so the model never sees a half-ingested day.
Ingestion of later days may go on meanwhile; only a retrain already queued or running makes
it wait, so one model is trained at a time.

Training options for the candidates (`max_rows`, `n_splits`) come from
`TRAFFIC_RETRAIN_MAX_ROWS` / `TRAFFIC_RETRAIN_N_SPLITS` when set (a soak trains smaller); the
run's config shows what was used.
"""

import hashlib
import os
from typing import Any

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from resources.lake import LakeResource
from sensors.retrain import TRAINING_ENV, retrain_job
from traffic_assets.models.baselines import baseline_models
from traffic_assets.models.candidates import candidate_models
from traffic_assets.models.complete_days import BUSY, MIN_TRAINING_DAYS, complete_days

BEST_MODEL = AssetKey("best_model")


def trained_days(context: SensorEvaluationContext) -> set[str]:
    """The lake days behind the last published model (none before the first)."""
    event = context.instance.get_latest_materialization_event(BEST_MODEL)
    materialization = event.asset_materialization if event else None
    days = materialization.metadata.get("lake_partitions") if materialization else None
    listed = days.value if days is not None else None
    return {str(day) for day in listed} if isinstance(listed, list) else set()


def training_run_config(days: list[str]) -> dict:
    """The days to train on and, when the environment sets them, smaller training options."""
    options = {key: int(os.environ[env]) for key, env in TRAINING_ENV.items() if env in os.environ}
    ops: dict[str, dict[str, Any]] = {"training_features": {"config": {"days": days}}}
    if options:
        for trained in [*candidate_models, baseline_models]:
            ops[trained.key.to_user_string()] = {"config": options}
    return {"ops": ops}


@sensor(
    job=retrain_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description=f"Retrains on the complete days (at least {MIN_TRAINING_DAYS}) when one of them "
    "is not in the last published model and no retrain is queued or running.",
)
def retrain_on_new_data(
    context: SensorEvaluationContext, lake: LakeResource
) -> RunRequest | SkipReason:
    instance = context.instance
    if instance.get_run_records(RunsFilter(job_name=retrain_job.name, statuses=BUSY), limit=1):
        return SkipReason("a retrain is queued or running")
    days = complete_days(instance, lake.local_path())
    new = sorted(set(days) - trained_days(context))
    if len(days) < MIN_TRAINING_DAYS:
        return SkipReason(f"{len(days)} complete day(s); training needs {MIN_TRAINING_DAYS}")
    if not new:
        return SkipReason(f"the last model has every complete day ({days[0]}..{days[-1]})")
    digest = hashlib.sha256(",".join(days).encode()).hexdigest()[:12]
    return RunRequest(
        run_key=f"retrain:{days[0]}..{days[-1]}:{digest}",
        run_config=training_run_config(days),
        tags={"new_days": str(len(new)), "training_days": f"{days[0]}..{days[-1]}"},
    )
