"""Sensor road graphs (DCRNN pickles + location CSVs) with consistency checks.

Direction follows DCRNN's gen_adj_mx.py: `adjacency[i, j] > 0` when sensor j is a short
road distance *after* sensor i, so traffic flows i -> j and i is upstream of j.
"""

from __future__ import annotations

import csv
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from traffic_core.datasets.speeds import DatasetError, default_data_dir

LOCATION_COLUMNS = ["sensor_id", "latitude", "longitude"]


@dataclass(eq=False)
class SensorGraph:
    """Sensors in a fixed order, their coordinates and the weighted directed adjacency."""

    sensor_ids: list[str]
    locations: pd.DataFrame
    adjacency: np.ndarray
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.sensor_ids = [str(s) for s in self.sensor_ids]
        n = len(self.sensor_ids)
        self._index = {s: i for i, s in enumerate(self.sensor_ids)}
        if len(self._index) != n:
            raise DatasetError("graph: sensor ids are not unique")
        self.adjacency = np.asarray(self.adjacency, dtype=np.float32)
        if self.adjacency.shape != (n, n):
            raise DatasetError(
                f"graph: adjacency is {self.adjacency.shape} but there are {n} sensor ids"
            )
        self.locations = _ordered_locations(self.locations, self.sensor_ids)

    def __len__(self) -> int:
        return len(self.sensor_ids)

    def index_of(self, sensor_id: str) -> int:
        try:
            return self._index[str(sensor_id)]
        except KeyError:
            raise KeyError(f"unknown sensor id {sensor_id!r}") from None

    def upstream(self, sensor_id: str) -> list[str]:
        """Sensors feeding traffic into `sensor_id`, strongest link first."""
        j = self.index_of(sensor_id)
        return self._ranked(self.adjacency[:, j], exclude=j)

    def downstream(self, sensor_id: str) -> list[str]:
        """Sensors that traffic at `sensor_id` reaches next, strongest link first."""
        i = self.index_of(sensor_id)
        return self._ranked(self.adjacency[i, :], exclude=i)

    def neighbours(self, sensor_id: str, k: int = 5) -> list[str]:
        """The k most strongly linked sensors in either direction."""
        i = self.index_of(sensor_id)
        both = np.maximum(self.adjacency[i, :], self.adjacency[:, i])
        return self._ranked(both, exclude=i)[:k]

    def _ranked(self, weights: np.ndarray, exclude: int) -> list[str]:
        order = np.argsort(-weights, kind="stable")
        return [self.sensor_ids[j] for j in order if weights[j] > 0 and j != exclude]

    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Directed links (upstream index, downstream index, weight) without self-loops."""
        src, dst = np.nonzero(self.adjacency)
        keep = src != dst
        src, dst = src[keep], dst[keep]
        return src, dst, self.adjacency[src, dst]

    def subgraph(self, sensor_ids: list[str]) -> SensorGraph:
        idx = np.array([self.index_of(s) for s in sensor_ids], dtype=np.intp)
        return SensorGraph(
            sensor_ids=[self.sensor_ids[i] for i in idx],
            locations=self.locations.iloc[idx],
            adjacency=self.adjacency[np.ix_(idx, idx)],
        )


def _ordered_locations(locations: pd.DataFrame, sensor_ids: list[str]) -> pd.DataFrame:
    missing_cols = [c for c in LOCATION_COLUMNS if c not in locations.columns]
    if missing_cols:
        raise DatasetError(f"graph: locations lack columns {missing_cols}")
    loc = locations[LOCATION_COLUMNS].copy()
    loc["sensor_id"] = loc["sensor_id"].astype(str)
    if loc["sensor_id"].duplicated().any():
        raise DatasetError("graph: duplicate sensor ids in locations")
    wanted, have = set(sensor_ids), set(loc["sensor_id"])
    if wanted != have:
        raise DatasetError(
            f"graph: {len(sensor_ids)} sensor ids but {len(loc)} locations; "
            f"without location: {sorted(wanted - have)[:5]}, unknown: {sorted(have - wanted)[:5]}"
        )
    loc = loc.set_index("sensor_id").loc[sensor_ids].reset_index()
    return loc.astype({"latitude": np.float64, "longitude": np.float64})


def _read_adj_pickle(path: Path) -> tuple[list[str], np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"adjacency pickle not found: {path}")
    with path.open("rb") as fh:
        try:
            obj = pickle.load(fh, encoding="latin1")  # written by Python 2 in DCRNN
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise DatasetError(f"{path}: not a readable pickle ({exc})") from exc
    if not (isinstance(obj, (list, tuple)) and len(obj) == 3):
        raise DatasetError(f"{path}: expected (sensor_ids, id_to_index, adjacency)")
    ids, id_to_ind, adj = obj
    ids = [str(s) for s in ids]
    if not isinstance(id_to_ind, dict) or any(id_to_ind.get(s) != i for i, s in enumerate(ids)):
        raise DatasetError(f"{path}: id_to_index disagrees with the sensor id order")
    return ids, np.asarray(adj, dtype=np.float32)


def _read_locations(path: Path) -> pd.DataFrame:
    """Locations with a header (sensor_id/latitude/longitude named) or without one
    (sensor_id, latitude, longitude; a leading index column is allowed)."""
    if not path.is_file():
        raise DatasetError(f"locations CSV not found: {path}")
    with path.open(newline="") as fh:
        first = next(csv.reader(fh), [])
    has_header = "sensor_id" in [c.strip() for c in first]
    df = pd.read_csv(path, header=0 if has_header else None, dtype=str)
    if not has_header:
        if df.shape[1] not in (3, 4):
            raise DatasetError(f"{path}: expected 3 or 4 columns, found {df.shape[1]}")
        df.columns = (["index"] if df.shape[1] == 4 else []) + LOCATION_COLUMNS
    try:
        return df.astype({"latitude": np.float64, "longitude": np.float64})
    except (KeyError, ValueError) as exc:
        raise DatasetError(f"{path}: bad latitude/longitude columns ({exc})") from exc


def load_graph(
    adj_pickle: str | os.PathLike[str],
    locations_csv: str | os.PathLike[str],
    sensor_ids_txt: str | os.PathLike[str] | None = None,
) -> SensorGraph:
    """Generic DCRNN-style graph; an optional ids file must list the same order."""
    ids, adj = _read_adj_pickle(Path(adj_pickle))
    if sensor_ids_txt is not None:
        if not Path(sensor_ids_txt).is_file():
            raise DatasetError(f"sensor ids file not found: {sensor_ids_txt}")
        listed = [s.strip() for s in Path(sensor_ids_txt).read_text().split(",") if s.strip()]
        if listed != ids:
            raise DatasetError(
                f"{sensor_ids_txt}: {len(listed)} ids do not match the {len(ids)} ids "
                f"(in order) of {adj_pickle}"
            )
    return SensorGraph(ids, _read_locations(Path(locations_csv)), adj)


def _folder(data_dir: str | os.PathLike[str] | None, name: str, probe: str) -> Path:
    """Accept the shared data root or the dataset folder itself."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    return root if (root / probe).is_file() else root / name


def load_metr_la_graph(data_dir: str | os.PathLike[str] | None = None) -> SensorGraph:
    """METR-LA: 207 sensors (ids file, locations with header, adj_mx.pkl)."""
    d = _folder(data_dir, "metr-la", "adj_mx.pkl")
    return load_graph(
        d / "adj_mx.pkl", d / "graph_sensor_locations.csv", d / "graph_sensor_ids.txt"
    )


def load_pems_bay_graph(data_dir: str | os.PathLike[str] | None = None) -> SensorGraph:
    """PEMS-BAY: 325 sensors (headerless locations, adj_mx_bay.pkl)."""
    d = _folder(data_dir, "pems-bay", "adj_mx_bay.pkl")
    return load_graph(d / "adj_mx_bay.pkl", d / "graph_sensor_locations_bay.csv")
