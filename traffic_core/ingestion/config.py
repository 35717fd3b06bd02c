"""What the lake writers validate against: the sensor catalogue and the configured rules.

Both writers (the `raw_traffic_events` asset and `traffic_core.ingestion.group_worker`
workers) build their `ValidationConfig` here, so a rule never differs between them. A writer
that checks sensors and finds no catalogue stops before reading anything: the check is never
skipped silently.
"""

from __future__ import annotations

import argparse
from datetime import date, timedelta
from pathlib import Path

from traffic_core.events import ValidationConfig
from traffic_core.lake_storage import LakePath
from traffic_core.networks import load_network_graph
from traffic_core.reference import known_sensor_ids
from traffic_core.settings import IngestionSettings, ingestion_settings, platform_settings


class SensorCatalogueMissing(RuntimeError):
    """Neither the lake's sensor table nor the dataset's sensor graph could be read."""


def sensor_catalogue(lake_root: LakePath, dataset: str, data_dir: Path) -> frozenset[str]:
    """Known sensor ids of network `dataset`: the lake's `sensor_graph` table, else the
    dataset's own graph files under `data_dir` (the table is made from them), else
    SensorCatalogueMissing."""
    known = known_sensor_ids(lake_root, dataset)
    if known is not None:
        return known
    try:
        graph = load_network_graph(dataset, data_dir / dataset)
    except Exception as exc:  # any unreadable or absent graph is the same start-up failure
        raise SensorCatalogueMissing(
            f"no sensor catalogue for {dataset!r}: the lake has no sensor table under "
            f"{lake_root} and the dataset graph in {data_dir} cannot be read ({exc}); "
            "materialize sensor_graph or set TRAFFIC_DATA_DIR, or turn the sensor check off "
            "explicitly"
        ) from exc
    ids = frozenset(graph.sensor_ids)
    if not ids:
        raise SensorCatalogueMissing(f"the sensor graph of {dataset!r} lists no sensors")
    return ids


def validation_config(
    known_sensors: frozenset[str] | None,
    partition_days: tuple[date, date] | None = None,
    settings: IngestionSettings | None = None,
) -> ValidationConfig:
    """The writers' rules from TRAFFIC_INGEST_* settings; known_sensors None means the caller
    turned the sensor check off on purpose."""
    settings = settings or ingestion_settings()
    lateness = settings.allowed_lateness_hours
    return ValidationConfig(
        max_message_bytes=settings.max_message_bytes,
        known_sensors=known_sensors,
        max_future_skew=timedelta(seconds=settings.max_future_skew_seconds),
        event_time_floor=settings.event_time_floor,
        allowed_lateness=timedelta(hours=lateness) if lateness > 0 else None,
        partition_days=partition_days,
        unknown_fields=settings.unknown_fields,
    )


def add_sensor_catalogue_flag(parser: argparse.ArgumentParser) -> None:
    """The `--no-sensor-catalogue` switch of the command-line readers of the readings topic."""
    parser.add_argument(
        "--no-sensor-catalogue",
        action="store_true",
        help="accept readings of any sensor id (otherwise the sensor catalogue must be "
        "readable at start: the lake's sensor table or the dataset's graph files)",
    )


def command_line_rules(
    no_sensor_catalogue: bool, lake_root: LakePath, settings: IngestionSettings
) -> ValidationConfig:
    """`validation_config` for a command-line reader: the catalogue of the configured dataset
    (lake table, else graph files) unless `--no-sensor-catalogue` turned the check off."""
    platform = platform_settings()
    known = (
        None
        if no_sensor_catalogue
        else sensor_catalogue(lake_root, platform.dataset, platform.data_dir)
    )
    return validation_config(known, settings=settings)
