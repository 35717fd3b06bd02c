"""The sensor catalogue in the lake (written by the `sensor_graph` asset)."""

from __future__ import annotations

from traffic_core.lake_storage import LakePath, read_parquet


def sensors_table_path(lake_root: LakePath, dataset: str) -> LakePath:
    return lake_root / "reference" / dataset / "sensors.parquet"


def known_sensor_ids(lake_root: LakePath, dataset: str) -> frozenset[str] | None:
    """Sensor ids of the catalogue, or None when it has not been materialized yet."""
    path = sensors_table_path(lake_root, dataset)
    if not path.exists():
        return None
    ids = read_parquet(path, columns=["sensor_id"])["sensor_id"].to_pandas()
    return frozenset(ids.astype(str))
