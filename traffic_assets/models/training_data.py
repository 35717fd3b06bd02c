"""`training_features`: the aggregates as one speed grid, with features and targets, and the
incident and weather columns (`traffic_core.context_features`; NaN where the lake has none)."""

import json
from datetime import date, timedelta

import pandas as pd
from dagster import (
    AssetExecutionContext,
    Config,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from resources.lake import LakeResource
from resources.network import NetworkResource
from traffic_assets.aggregation.assets import traffic_5min_aggregates
from traffic_assets.models.complete_days import MIN_TRAINING_DAYS, complete_days
from traffic_core import features as f
from traffic_core.context_features import SYNTHETIC_COLUMN, with_context_features
from traffic_core.lake import (
    INCIDENTS,
    WEATHER,
    RawZone,
    ingest_id_counts,
    ingest_id_list,
    raw_files,
    read_raw_days,
)
from traffic_core.models import training_frame
from traffic_core.registry import frame_fingerprint

INGEST_IDS_FILE = "ingest_ids.json"


class TrainingDaysConfig(Config):
    days: list[str] = Field(
        default=[],
        description="Aggregated days to train on (the retrain sensor passes the complete days "
        "it saw). Empty: every complete day (see traffic_assets.models.complete_days).",
    )


def speed_grid(lake: LakeResource, days: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Mean speed per sensor and 5-minute window over the given (default: every) aggregated
    day, and those days."""
    by_day = lake.aggregates_files(days)
    files = list(by_day.values())
    if not files:
        raise ValueError("no traffic_5min_aggregates partitions in the lake yet")
    frame = pd.concat(
        pd.read_parquet(p, columns=["sensor_id", "window_start", "speed_mean"]) for p in files
    )
    grid = frame.pivot(index="window_start", columns="sensor_id", values="speed_mean")
    grid.index = pd.DatetimeIndex(grid.index).tz_convert("UTC").tz_localize(None)
    return grid.sort_index(), [day.isoformat() for day in by_day]


def days_ingest_ids(lake: LakeResource, days: list[str]) -> list[dict]:
    """Producer replays (ingest ids) behind the raw readings of the given days, with counts."""
    files = [f for day in days for f in raw_files(lake.local_path(), date.fromisoformat(day))]
    return ingest_id_list(ingest_id_counts(files))


def context_sources(
    lake: LakeResource, days: list[str]
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Incident reports and weather observations stored for the days (and the day before:
    incidents still active at midnight, the last observation before it), in Kafka order; None
    for a zone with nothing stored, an absent source."""

    def zone(raw: RawZone) -> pd.DataFrame | None:
        first = date.fromisoformat(days[0]) - timedelta(days=1)
        wanted = [first, *(date.fromisoformat(d) for d in days)]
        rows = read_raw_days(lake.path(), wanted, raw)
        return None if rows is None else rows.sort_values(["kafka_partition", "kafka_offset"])

    return zone(INCIDENTS), zone(WEATHER)


def training_ingest_ids(lake: LakeResource) -> list[dict]:
    """The ingest ids `training_features` recorded for its rows ([] before it recorded any)."""
    path = lake.features_dir() / INGEST_IDS_FILE
    return json.loads(path.read_text()) if path.exists() else []


@asset(
    deps=[traffic_5min_aggregates],
    group_name="features",
    code_version=f.FEATURE_VERSION,
    kinds={"pandas", "parquet"},
    description="Features and 15/30/60-minute targets for every sensor and window of the "
    "complete aggregated days (never a day the stream is still delivering); each day's "
    "profile features come from the other days only.",
)
def training_features(
    context: AssetExecutionContext,
    config: TrainingDaysConfig,
    lake: LakeResource,
    network: NetworkResource,
) -> MaterializeResult:
    chosen = sorted(config.days or complete_days(context.instance, lake.local_path()))
    if len(chosen) < MIN_TRAINING_DAYS:
        raise ValueError(f"training needs {MIN_TRAINING_DAYS} complete days; complete: {chosen}")
    grid, days = speed_grid(lake, chosen)
    if days != chosen:
        raise ValueError(f"days without aggregates: {sorted(set(chosen) - set(days))}")
    graph = network.graph()
    sensors = [s for s in graph.sensor_ids if s in grid.columns]
    feature_context = f.FeatureContext.from_graph(graph.subgraph(sensors), f.fit_profile(grid))
    incidents, weather = context_sources(lake, days)
    frame = with_context_features(
        training_frame(grid, feature_context), feature_context, incidents, weather
    )
    out = lake.features_dir()
    out.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out / "training.parquet", index=False)
    feature_context.save(out / "feature_context.npz")
    (out / "days.txt").write_text("\n".join(days))
    ingest_ids = days_ingest_ids(lake, days)
    (out / INGEST_IDS_FILE).write_text(json.dumps(ingest_ids))
    version = frame_fingerprint(frame)
    context.log.info(
        "%d rows over %d days and %d sensors, from ingest ids %s",
        len(frame),
        len(days),
        len(sensors),
        [i["ingest_id"] for i in ingest_ids],
    )
    return MaterializeResult(
        data_version=DataVersion(version),
        metadata={
            "dagster/row_count": len(frame),
            "dagster/uri": MetadataValue.path(str(out)),
            "days": MetadataValue.json(days),
            "ingest_ids": MetadataValue.json(ingest_ids),
            "sensors": len(sensors),
            "feature_version": f.FEATURE_VERSION,
            "context_sources": MetadataValue.json(
                {"incidents": incidents is not None, "weather": weather is not None}
            ),
            "context_synthetic_rows": int(frame[SYNTHETIC_COLUMN].sum()),
            "training_data_version": version,
        },
    )
