"""The sensor catalogue in the lake (written by the `sensor_graph` asset)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def sensors_table_path(lake_root: Path, dataset: str) -> Path:
    return lake_root / "reference" / dataset / "sensors.parquet"


def known_sensor_ids(lake_root: Path, dataset: str) -> frozenset[str] | None:
    """Sensor ids of the catalogue, or None when it has not been materialized yet."""
    path = sensors_table_path(lake_root, dataset)
    if not path.exists():
        return None
    return frozenset(pd.read_parquet(path, columns=["sensor_id"])["sensor_id"].astype(str))
