"""Days imported straight into the raw zone are stored as ingestion stores them, ingest id too."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from traffic_core.ingestion.raw_import import write_speeds_as_raw
from traffic_core.lake import ingest_id_counts, raw_files, read_raw_day


def speeds(start: str, steps: int, sensors: int) -> pd.DataFrame:
    index = pd.date_range(start, periods=steps, freq="5min")
    values = np.arange(steps * sensors, dtype=float).reshape(steps, sensors)
    return pd.DataFrame(values, index=index, columns=[f"s{i}" for i in range(sensors)])


def test_each_day_lands_in_one_file_with_one_ingest_id(tmp_path: Path) -> None:
    wide = speeds("2012-03-01 23:50", 4, 3)  # two readings' steps either side of midnight
    days = write_speeds_as_raw(tmp_path, wide, source="metr-la", is_synthetic=False)
    assert days == [date(2012, 3, 1), date(2012, 3, 2)]
    counts = ingest_id_counts(raw_files(tmp_path))
    ((ingest_id, readings),) = counts.items()
    assert re.fullmatch(r"import-\d{8}T\d{6}-[0-9a-f]{6}", ingest_id) and readings == 12
    first = read_raw_day(tmp_path, date(2012, 3, 1))
    assert first["speed_mph"].tolist() == list(range(6))
    assert first["kafka_offset"].tolist() == list(range(6))
    assert read_raw_day(tmp_path, date(2012, 3, 2))["kafka_offset"].tolist() == list(range(6, 12))


def test_a_given_ingest_id_is_kept(tmp_path: Path) -> None:
    write_speeds_as_raw(
        tmp_path, speeds("2012-03-01", 2, 2), source="x", is_synthetic=True, ingest_id="import-a"
    )
    assert ingest_id_counts(raw_files(tmp_path)) == {"import-a": 4}
