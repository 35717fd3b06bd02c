"""Speed matrices: METR-LA style loaders, validation and Parquet round trips.

Every loader returns the same shape of data so the rest of the platform never cares
where speeds came from: a DataFrame with a tz-naive DatetimeIndex named "timestamp" in
consecutive 5-minute steps, one float32 column per sensor id (string), mph, and NaN for
missing readings. METR-LA files encode a missing reading as 0.0; zero is never a real
speed, so loaders turn it into NaN.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FREQ = "5min"
METR_LA_START = "2012-03-01 00:00"
METR_LA_ROWS = 34_272
METR_LA_BLOB_ID = "7df0003054d1bccd255d38949b2ef011dcadad3f"
LONG_COLUMNS = ("sensor_id", "timestamp", "speed_mph")
ATTRS_KEY = b"PANDAS_ATTRS"  # the key pandas itself uses, so pd.read_parquet restores attrs
SYNTHETIC_KEY = b"synthetic"
METADATA_KEY = b"traffic_core.metadata"

_TIME_HEADERS = {"", "timestamp", "time", "datetime", "date"}


class DatasetError(ValueError):
    """A data file is missing, malformed or inconsistent; the message says how."""


def default_data_dir() -> Path:
    """Shared real-data folder: env TRAFFIC_DATA_DIR, else `<repo>/../shared/data`."""
    env = os.environ.get("TRAFFIC_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _existing(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"speed file not found: {p}")
    return p


def finalise_speeds(df: pd.DataFrame, freq: str = FREQ, source: str = "data") -> pd.DataFrame:
    """Validate and normalise a wide speed frame to the platform form (zeros become NaN)."""
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise DatasetError(f"{source}: no speed data (shape {df.shape})")
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DatasetError(f"{source}: index must be timestamps, got {type(df.index).__name__}")
    if df.index.tz is not None:
        raise DatasetError(
            f"{source}: timestamps are timezone-aware ({df.index.tz}); "
            "convert them to naive local time first"
        )
    columns = [str(c) for c in df.columns]
    dup_cols = _duplicates(columns)
    if dup_cols:
        raise DatasetError(f"{source}: duplicate sensor columns {dup_cols[:5]}")
    bad = [c for c, dt in zip(columns, df.dtypes, strict=True) if not _is_numeric(dt)]
    if bad:
        sample = df.iloc[:, columns.index(bad[0])].dropna().head(1).tolist()
        raise DatasetError(
            f"{source}: non-numeric speed columns {bad[:5]} ({len(bad)} in all); "
            f"e.g. column {bad[0]!r} holds {sample!r}"
        )
    index = df.index
    if index.has_duplicates:
        dups = index[index.duplicated()].unique()[:3]
        raise DatasetError(f"{source}: duplicate timestamps, e.g. {[str(t) for t in dups]}")
    step = pd.Timedelta(freq)
    if len(index) > 1:
        wrong = np.flatnonzero(np.diff(index.as_unit("ns").asi8) != step.value)
        if wrong.size:
            i = int(wrong[0])
            raise DatasetError(
                f"{source}: rows must be consecutive {freq} steps; {index[i]} is followed by "
                f"{index[i + 1]} (row {i + 1}) and {wrong.size} step(s) are wrong in all"
            )
    values = df.to_numpy(dtype=np.float32, copy=True)
    values[values == 0.0] = np.nan
    out = pd.DataFrame(
        values,
        index=pd.DatetimeIndex(index, name="timestamp", freq=freq).as_unit("ns"),
        columns=pd.Index(columns, name="sensor_id"),
    )
    out.attrs = dict(df.attrs)
    return out


def _duplicates(names: list[str]) -> list[str]:
    return sorted(pd.Index(names)[pd.Index(names).duplicated()].unique())


def _is_numeric(dtype: Any) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def load_metr_h5(path: str | os.PathLike[str], key: str = "df") -> pd.DataFrame:
    """Official DCRNN `metr-la.h5` (or any pandas HDF5 speed frame)."""
    p = _existing(path)
    try:
        with pd.HDFStore(p, mode="r") as store:
            keys = store.keys()
            df = store[key] if f"/{key.lstrip('/')}" in keys else None
    except (OSError, ValueError, TypeError, RuntimeError) as exc:  # HDF5ExtError: RuntimeError
        raise DatasetError(f"{p}: not a readable pandas HDF5 file ({exc})") from exc
    if df is None:
        raise DatasetError(f"{p}: no key {key!r}; keys are {keys}")
    if not isinstance(df, pd.DataFrame):
        raise DatasetError(f"{p}: key {key!r} holds a {type(df).__name__}, not a DataFrame")
    return finalise_speeds(df, source=str(p))


def git_blob_id(path: str | os.PathLike[str]) -> str:
    """Git blob sha1 of a file: what GitHub and git use to identify the exact content."""
    p = Path(path)
    digest = hashlib.sha1(b"blob %d\0" % p.stat().st_size)
    with p.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class H5Check:
    """Outcome of comparing a user-supplied file with the published metr-la.h5."""

    path: str
    blob_id: str
    rows: int | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.ok:
            return f"{self.path}: matches the published metr-la.h5 ({self.rows} rows)"
        return f"{self.path}: differs from the published metr-la.h5: " + "; ".join(self.problems)


def verify_metr_h5(path: str | os.PathLike[str], key: str = "df") -> H5Check:
    """Check a copy against the published blob id and row count; reports, never raises
    for a mismatch (a re-saved but faithful copy is still usable)."""
    p = _existing(path)
    blob = git_blob_id(p)
    problems: list[str] = []
    if blob != METR_LA_BLOB_ID:
        problems.append(f"git blob id {blob} != {METR_LA_BLOB_ID}")
    rows: int | None = None
    try:
        with pd.HDFStore(p, mode="r") as store:
            storer = store.get_storer(key)
            rows = int(storer.nrows if storer.is_table else storer.shape[0])
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RuntimeError) as exc:
        problems.append(f"cannot read key {key!r} ({exc})")
    if rows is not None and rows != METR_LA_ROWS:
        problems.append(f"{rows} rows != {METR_LA_ROWS}")
    return H5Check(path=str(p), blob_id=blob, rows=rows, problems=tuple(problems))


def load_speed_csv(
    path: str | os.PathLike[str], start: str = METR_LA_START, freq: str = FREQ
) -> pd.DataFrame:
    """CSV with sensor-id header. Without a timestamp first column (T-GCN's Los-loop form)
    row i is `start + freq * i`; with one, its timestamps are used and `start` is ignored."""
    p = _existing(path)
    with p.open(newline="") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        raise DatasetError(f"{p}: empty CSV")
    dup = _duplicates(header)
    if dup:
        raise DatasetError(f"{p}: duplicate sensor columns in header {dup[:5]}")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{p}: cannot parse CSV ({exc})") from exc
    df.columns = header
    first = df.columns[0]
    if first.strip().lower() in _TIME_HEADERS or not _is_numeric(df[first].dtype):
        with warnings.catch_warnings():  # text that is not a date simply fails to parse
            warnings.simplefilter("ignore", UserWarning)
            stamps = pd.to_datetime(df[first], errors="coerce")
        if stamps.notna().all():
            df = df.drop(columns=first).set_index(pd.DatetimeIndex(stamps))
    if not isinstance(df.index, pd.DatetimeIndex):
        df.index = pd.date_range(pd.Timestamp(start), periods=len(df), freq=freq)
    return finalise_speeds(df, freq=freq, source=str(p))


def load_parquet(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Parquet in wide form (timestamp index or column, one column per sensor) or long form
    (sensor_id, timestamp, speed_mph)."""
    p = _existing(path)
    try:
        df = pd.read_parquet(p)
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"{p}: not a readable Parquet file ({exc})") from exc
    if set(LONG_COLUMNS) <= set(df.columns):
        return _pivot_long(df, source=str(p))
    if "timestamp" in df.columns:
        df = df.set_index("timestamp")
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DatasetError(
            f"{p}: expected a timestamp index (wide form) or columns {list(LONG_COLUMNS)} "
            f"(long form); found columns {list(df.columns[:5])}"
        )
    return finalise_speeds(df, source=str(p))


def _pivot_long(long: pd.DataFrame, source: str) -> pd.DataFrame:
    if not _is_numeric(long["speed_mph"].dtype):
        raise DatasetError(f"{source}: speed_mph is not numeric ({long['speed_mph'].dtype})")
    s_codes, sensors = pd.factorize(long["sensor_id"].astype(str))
    t_codes, stamps = pd.factorize(pd.to_datetime(long["timestamp"]), sort=True)
    flat = t_codes.astype(np.int64) * len(sensors) + s_codes
    if np.unique(flat).size != flat.size:
        raise DatasetError(f"{source}: duplicate (sensor_id, timestamp) rows in long form")
    values = np.full((len(stamps), len(sensors)), np.nan, dtype=np.float32)
    values.flat[flat] = long["speed_mph"].to_numpy(dtype=np.float32)
    wide = pd.DataFrame(values, index=pd.DatetimeIndex(stamps), columns=list(sensors))
    wide.attrs = dict(long.attrs)
    return finalise_speeds(wide, source=source)


def load_speeds(path: str | os.PathLike[str], start: str | None = None) -> pd.DataFrame:
    """Load any supported speed file by suffix. `start` only matters for CSVs without a
    timestamp column (default: METR-LA's 2012-03-01 00:00)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in {".h5", ".hdf5"}:
        return load_metr_h5(p)
    if suffix == ".csv":
        return load_speed_csv(p, start=start or METR_LA_START)
    if suffix == ".parquet":
        return load_parquet(p)
    raise DatasetError(
        f"{p}: unknown speed file format {suffix or '(no suffix)'!r}; "
        "expected .h5/.hdf5, .csv or .parquet"
    )


def to_long(df: pd.DataFrame) -> pd.DataFrame:
    """Long form (sensor_id, timestamp, speed_mph) ordered by time then sensor, as events are
    produced; missing readings (NaN or METR-LA's 0.0) become NaN."""
    n_t, n_s = df.shape
    speeds = df.to_numpy(dtype=np.float32, copy=True).ravel()
    speeds[speeds == 0.0] = np.nan
    long = pd.DataFrame(
        {
            "sensor_id": np.tile(np.asarray(df.columns.astype(str), dtype=object), n_t),
            "timestamp": np.repeat(df.index.to_numpy(), n_s),
            "speed_mph": speeds,
        }
    )
    long.attrs = dict(df.attrs)
    return long


def parquet_metadata(
    attrs: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
) -> dict[bytes, bytes]:
    """Key-value metadata carrying DataFrame.attrs, a plain `synthetic` flag that tools other
    than pandas can read, and optionally a JSON description (e.g. simulator settings)."""
    out = {
        ATTRS_KEY: json.dumps(dict(attrs), default=str).encode(),
        SYNTHETIC_KEY: b"true" if attrs.get("synthetic") else b"false",
    }
    if metadata is not None:
        out[METADATA_KEY] = json.dumps(dict(metadata), default=str).encode()
    return out


def save_parquet(
    data: pd.DataFrame | Iterable[pd.DataFrame],
    path: str | os.PathLike[str],
    *,
    long: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write speeds (one frame, or wide chunks streamed as row groups so long simulations
    never sit in memory at once). attrs of the first frame, and `metadata`, go into the
    file's key-value metadata."""
    frames = iter([data] if isinstance(data, pd.DataFrame) else data)
    p = Path(path)
    writer: pq.ParquetWriter | None = None
    try:
        for frame in frames:
            out = to_long(frame) if long else frame
            table = pa.Table.from_pandas(out, preserve_index=not long)
            if writer is None:
                meta = {**(table.schema.metadata or {}), **parquet_metadata(frame.attrs, metadata)}
                schema = table.schema.with_metadata(meta)
                writer = pq.ParquetWriter(p, schema)
            writer.write_table(table.replace_schema_metadata(schema.metadata))
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise DatasetError(f"{p}: nothing to write")
    return p
