"""Layout of the lake, its one owner: the raw zones of readings, incidents and weather (one
immutable Parquet file per offset range each), the 5-minute aggregates (one file per day), the
training features and the features Spark computes (one folder per day).

A file is named by (event date, topic, partition, first offset, last offset) of the Kafka range it
came from, so writing the same range again replaces the same file: ingestion can fail and rerun
without losing or duplicating a reading. Files are written to a temporary name, made durable and
then renamed in one step, so a reader never sees half a file. The root is a local folder or an
HDFS URL (`traffic_core.lake_storage`); the layout is the same on both.

Event dates are the calendar dates of the readings' timestamps. METR-LA's index is a regular
5-minute grid with no daylight-saving jumps, so its wall-clock times are carried as UTC.
"""

from __future__ import annotations

import os
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from traffic_core.lake_storage import LakePath, parquet_file, publish, read_parquet, write_parquet

RAW_ZONE = "raw/traffic_events"
AGGREGATES_ZONE = ("aggregates", "traffic_5min")
"""Folders of the 5-minute aggregates under the lake root (one `date=YYYY-MM-DD` per day)."""
AGGREGATES_FILE = "part.parquet"
FEATURES_ZONE = ("features", "training")
"""The training matrix, its days and the feature context of the latest training run."""
SPARK_FEATURES_ZONE = ("features", "spark")
"""Features computed by Spark, one `date=YYYY-MM-DD` folder of Parquet parts per day."""

RAW_SCHEMA = pa.schema(
    [
        pa.field("sensor_id", pa.string(), nullable=False),
        pa.field("event_time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("speed_mph", pa.float64()),
        pa.field("volume", pa.int32()),
        pa.field("occupancy", pa.float64()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("is_synthetic", pa.bool_(), nullable=False),
        pa.field("kafka_topic", pa.string(), nullable=False),
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        pa.field("ingest_id", pa.string()),
    ]
)
"""Columns of every raw file; speed_mph null means the detector reported no reading.

`ingest_id` names the producer replay or direct import (`traffic_core.ingestion.raw_import`) a
reading came from (null for readings sent without one, and absent from files written before it
existed: readers get nulls). It is part of the message, so a rerun still writes identical
bytes; which run wrote which file is in the Dagster event log.
"""
OPTIONAL_RAW_COLUMNS = ("ingest_id",)
"""Columns older raw files lack; `read_raw_day` and `_raw_table` fill them with nulls."""

_ORIGIN = [f for f in RAW_SCHEMA if f.name.startswith("kafka_")]

INCIDENTS_SCHEMA = pa.schema(
    [
        pa.field("incident_id", pa.string(), nullable=False),
        pa.field("sensor_id", pa.string(), nullable=False),
        pa.field("start_time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("end_time", pa.timestamp("ms", tz="UTC")),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("affected_sensors", pa.list_(pa.string()), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("is_synthetic", pa.bool_(), nullable=False),
        *_ORIGIN,
    ]
)
"""Incident reports as received (an update of an incident is a new report with the same id)."""

WEATHER_SCHEMA = pa.schema(
    [
        pa.field("station_id", pa.string(), nullable=False),
        pa.field("observed_at", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("temperature_c", pa.float64()),
        pa.field("precipitation_mm", pa.float64()),
        pa.field("visibility_km", pa.float64()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("is_synthetic", pa.bool_(), nullable=False),
        *_ORIGIN,
    ]
)
"""Weather observations; a null measurement was not observed (never 0)."""


@dataclass(frozen=True)
class RawZone:
    """One topic's raw zone: its folder under the lake root, its columns, and the timestamp
    column whose UTC date picks a record's daily partition."""

    folder: str
    schema: pa.Schema
    time_column: str
    optional_columns: tuple[str, ...] = ()

    @property
    def message_schema(self) -> pa.Schema:
        """The columns the message carries; the `kafka_*` origin columns are added on write."""
        return pa.schema([f for f in self.schema if not f.name.startswith("kafka_")])


READINGS = RawZone(RAW_ZONE, RAW_SCHEMA, "event_time", OPTIONAL_RAW_COLUMNS)
INCIDENTS = RawZone("raw/traffic_incidents", INCIDENTS_SCHEMA, "start_time")
"""Incidents are filed under the date they started."""
WEATHER = RawZone("raw/weather_observations", WEATHER_SCHEMA, "observed_at")

_EPOCH_DAY = date(1970, 1, 1)
_WRITERS = 4  # files of one range written at once: enough to overlap fsync waits
_FILE_RE = re.compile(r"offsets=(\d{20})-(\d{20})\.parquet$")


@dataclass(frozen=True, order=True)
class OffsetRange:
    """Offsets first..last (inclusive) of one topic-partition."""

    topic: str
    partition: int
    first: int
    last: int

    def __post_init__(self) -> None:
        if self.first < 0 or self.last < self.first:
            raise ValueError(f"bad offset range {self.first}..{self.last}")

    @property
    def count(self) -> int:
        return self.last - self.first + 1


def raw_file_path(
    lake_root: LakePath, day: date, offsets: OffsetRange, zone: RawZone = READINGS
) -> LakePath:
    return (
        raw_day_dir(lake_root, day, zone)
        / f"topic={offsets.topic}"
        / f"partition={offsets.partition:03d}"
        / f"offsets={offsets.first:020d}-{offsets.last:020d}.parquet"
    )


def raw_day_dir(lake_root: LakePath, day: date, zone: RawZone = READINGS) -> LakePath:
    return lake_root / zone.folder / day_folder(day)


def day_folder(day: date | str) -> str:
    """The Hive-style folder of one event date, `date=YYYY-MM-DD`."""
    return f"date={day.isoformat() if isinstance(day, date) else date.fromisoformat(day)}"


def folder_day(folder: LakePath) -> date | None:
    """The date a `date=YYYY-MM-DD` folder stands for; None for any other (stray) folder."""
    try:
        return date.fromisoformat(folder.name.removeprefix("date="))
    except ValueError:
        return None


def aggregates_file(lake_root: LakePath, day: date | str) -> LakePath:
    return lake_root.joinpath(*AGGREGATES_ZONE, day_folder(day), AGGREGATES_FILE)


def aggregates_files(
    lake_root: LakePath, days: Iterable[str] | None = None
) -> dict[date, LakePath]:
    """The aggregated days in the lake (optionally only those of `days`), oldest first."""
    wanted = None if days is None else {date.fromisoformat(d) for d in days}
    files: dict[date, LakePath] = {}
    zone: LakePath = lake_root.joinpath(*AGGREGATES_ZONE)
    found: list[LakePath] = list(zone.glob(f"date=*/{AGGREGATES_FILE}"))
    for path in sorted(found, key=str):
        day = folder_day(path.parent)
        if day is not None and (wanted is None or day in wanted):
            files[day] = path
    return files


def raw_day_dirs(lake_root: LakePath, zone: RawZone = READINGS) -> dict[date, LakePath]:
    """The event dates with a raw folder (files or not), by date."""
    return {
        day: folder
        for folder in (lake_root / zone.folder).glob("date=*")
        if (day := folder_day(folder)) is not None
    }


def features_dir(lake_root: LakePath) -> LakePath:
    return lake_root.joinpath(*FEATURES_ZONE)


def spark_features_dir(lake_root: LakePath) -> LakePath:
    return lake_root.joinpath(*SPARK_FEATURES_ZONE)


def spark_features_day_dir(lake_root: LakePath, day: date | str) -> LakePath:
    return spark_features_dir(lake_root) / day_folder(day)


def write_atomically(table: pa.Table, path: LakePath) -> None:
    """Write to a temporary name, then replace any previous version of the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per attempt: on HDFS a failed attempt's file stays open under its writer's
    # lease for a while, and recreating that very name would be refused.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    write_parquet(table, tmp, compression="zstd")
    publish(tmp, path)


def write_raw_range(
    lake_root: LakePath,
    offsets: OffsetRange,
    rows: pa.Table | pd.DataFrame,
    zone: RawZone = READINGS,
) -> dict[date, LakePath]:
    """Write the rows of one offset range, split by event date; returns the files per date.

    The files of a range are written and fsynced concurrently (Parquet encoding and fsync
    release the GIL); all are durable when this returns.
    """
    if not len(rows):
        return {}
    table = _raw_table(rows, zone)
    epoch_days = table[zone.time_column].to_numpy().astype("datetime64[D]").astype(np.int64)
    parts = {
        _EPOCH_DAY + timedelta(days=day): table.filter(epoch_days == day)
        for day in np.unique(epoch_days).tolist()
    }
    written = {day: raw_file_path(lake_root, day, offsets, zone) for day in parts}
    with ThreadPoolExecutor(min(len(parts), _WRITERS)) as pool:
        list(pool.map(write_atomically, parts.values(), written.values()))
    return written


def _raw_table(rows: pa.Table | pd.DataFrame, zone: RawZone = READINGS) -> pa.Table:
    """Rows in the zone's schema in Kafka offset order, with no pandas metadata: the same rows
    give the same bytes whichever way they were built."""
    if isinstance(rows, pd.DataFrame):
        rows = pa.Table.from_pandas(rows, preserve_index=False)
    for name in zone.optional_columns:
        if name not in rows.column_names:
            column = zone.schema.field(name)
            rows = rows.append_column(column, pa.nulls(rows.num_rows, column.type))
    table = rows.select(zone.schema.names).cast(zone.schema)
    offsets = table["kafka_offset"].to_numpy()
    if (np.diff(offsets) < 0).any():
        table = table.take(np.argsort(offsets, kind="stable"))
    return table.replace_schema_metadata(None)


def raw_files(
    lake_root: LakePath, day: date | None = None, zone: RawZone = READINGS
) -> list[LakePath]:
    base = raw_day_dir(lake_root, day, zone) if day else lake_root / zone.folder
    return sorted(p for p in base.rglob("offsets=*.parquet") if _FILE_RE.search(p.name))


def read_raw_day(lake_root: LakePath, day: date, zone: RawZone = READINGS) -> pd.DataFrame:
    """Every record stored for one event date (empty frame with the schema if none)."""
    files = raw_files(lake_root, day, zone)
    if not files:
        return zone.schema.empty_table().to_pandas()
    return pa.concat_tables(read_parquet(f, schema=zone.schema) for f in files).to_pandas()


def read_raw_days(lake_root: LakePath, days: Iterable[date], zone: RawZone) -> pd.DataFrame | None:
    """Every record of the given dates in one zone; None when the zone holds none of them (a
    source that is absent, not one that reported nothing)."""
    files = [f for day in days for f in raw_files(lake_root, day, zone)]
    if not files:
        return None
    return pa.concat_tables(read_parquet(f, schema=zone.schema) for f in files).to_pandas()


def ingest_id_counts(files: Iterable[LakePath]) -> Counter[str | None]:
    """Readings per ingest id (None: readings without one) in raw files, reading only that
    column (dictionary-encoded, so a file of one replay decodes one string)."""
    counts: Counter[str | None] = Counter()
    for path in files:
        parquet = parquet_file(path)
        if "ingest_id" not in parquet.schema_arrow.names:
            counts[None] += parquet.metadata.num_rows
            continue
        column = read_parquet(path, columns=["ingest_id"], read_dictionary=["ingest_id"])
        counts.update(count_values(column["ingest_id"]))
    return counts


def count_values(column: pa.Array | pa.ChunkedArray) -> Counter[str | None]:
    """How often each value (None for null) occurs in a string or dictionary column."""
    counted = pc.value_counts(column)
    values, counts = counted.field("values").to_pylist(), counted.field("counts").to_pylist()
    return Counter(dict(zip(values, counts, strict=True)))


def ingest_id_list(counts: Mapping[str | None, int]) -> list[dict[str, str | int | None]]:
    """Counts as JSON-ready `[{"ingest_id", "readings"}]`, named ids first in order."""
    return [{"ingest_id": name, "readings": int(counts[name])} for name in ordered_ids(counts)]


def ordered_ids(names: Iterable[str | None]) -> list[str | None]:
    """Ingest ids sorted (they start with their replay's time), None last."""
    return sorted(names, key=lambda n: (n is None, n or ""))


def stored_offset_ranges(
    lake_root: LakePath,
    topic: str | None = None,
    partition: int | None = None,
    zone: RawZone = READINGS,
) -> list[OffsetRange]:
    """Offset ranges that have files in the lake (the ingestion ledger), optionally of one
    topic and partition only."""
    pattern = "/".join(
        (
            "date=*",
            "topic=*" if topic is None else f"topic={topic}",
            "partition=*" if partition is None else f"partition={partition:03d}",
            "offsets=*.parquet",
        )
    )
    ranges = set()
    for path in (lake_root / zone.folder).glob(pattern):
        match = _FILE_RE.search(path.name)
        if match is None:
            continue
        ranges.add(
            OffsetRange(
                path.parent.parent.name.removeprefix("topic="),
                int(path.parent.name.removeprefix("partition=")),
                int(match[1]),
                int(match[2]),
            )
        )
    return sorted(ranges)
