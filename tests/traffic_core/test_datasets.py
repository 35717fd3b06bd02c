"""Loaders and graphs against the real shared files plus small generated edge cases."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from traffic_core.datasets import (
    DatasetError,
    SensorGraph,
    default_data_dir,
    git_blob_id,
    load_graph,
    load_metr_h5,
    load_metr_la_graph,
    load_parquet,
    load_pems_bay_graph,
    load_speed_csv,
    load_speeds,
    save_parquet,
    to_long,
    verify_metr_h5,
)

SIX_DAYS = "metr-la/los_loop_speed_2012-03-01_to_03-06.csv"


@pytest.fixture(scope="module")
def data_dir() -> Path:
    root = default_data_dir()
    if not (root / "metr-la").is_dir():
        pytest.fail(f"shared METR-LA data expected at {root} (or set TRAFFIC_DATA_DIR)")
    return root


@pytest.fixture(scope="module")
def six_days(data_dir: Path) -> pd.DataFrame:
    return load_speeds(data_dir / SIX_DAYS)


def small_frame(zeros: bool = True) -> pd.DataFrame:
    index = pd.date_range("2012-03-01", periods=6, freq="5min", name="timestamp")
    values = np.arange(1, 19, dtype=np.float32).reshape(6, 3) + 50
    if zeros:
        values[1, 0] = values[4, 2] = 0.0
    return pd.DataFrame(values, index=index, columns=["773869", "767541", "767542"])


# ----------------------------------------------------------------------------- real CSV


def test_real_csv_has_published_shape_and_values(six_days: pd.DataFrame, data_dir: Path) -> None:
    assert six_days.shape == (1728, 207)
    assert six_days.iloc[0, :4].tolist() == [64.375, 67.625, 67.125, 61.5]
    assert six_days.index[0] == pd.Timestamp("2012-03-01 00:00")
    assert six_days.index[-1] == pd.Timestamp("2012-03-06 23:55")
    assert six_days.index.name == "timestamp"
    assert six_days.index.freq == "5min"
    assert set(six_days.dtypes) == {np.dtype(np.float32)}
    ids = (data_dir / "metr-la/graph_sensor_ids.txt").read_text().strip().split(",")
    assert list(six_days.columns) == ids


def test_real_csv_statistics(six_days: pd.DataFrame) -> None:
    values = six_days.to_numpy()
    assert not np.isnan(values).any()
    # PROVENANCE.md quotes 58.9 mph; the file itself averages 59.29 (checked in float64 too).
    assert float(values.astype(np.float64).mean()) == pytest.approx(59.29, abs=0.01)
    assert values.min() == 1.0
    assert values.max() == 70.0


def test_csv_start_and_timestamp_column(tmp_path: Path) -> None:
    frame = small_frame(zeros=False)
    plain = tmp_path / "plain.csv"
    frame.to_csv(plain, index=False)
    assert load_speeds(plain, start="2020-01-02 03:00").index[0] == pd.Timestamp("2020-01-02 03:00")
    stamped = tmp_path / "stamped.csv"
    frame.set_index(frame.index + pd.Timedelta("1D")).to_csv(stamped)
    loaded = load_speed_csv(stamped)
    assert loaded.index[0] == pd.Timestamp("2012-03-02 00:00")
    np.testing.assert_array_equal(loaded.to_numpy(), frame.to_numpy())


# ----------------------------------------------------------------------------- HDF5


def test_h5_round_trip_turns_zeros_into_nan(tmp_path: Path) -> None:
    frame = small_frame()
    path = tmp_path / "metr-la.h5"
    frame.to_hdf(path, key="df")
    loaded = load_speeds(path)
    assert loaded.shape == frame.shape
    assert list(loaded.columns) == list(frame.columns)
    assert np.isnan(loaded.iloc[1, 0]) and np.isnan(loaded.iloc[4, 2])
    assert int(loaded.isna().sum().sum()) == 2
    assert loaded.iloc[0, 0] == frame.iloc[0, 0]
    with pytest.raises(DatasetError, match="no key 'speeds'"):
        load_metr_h5(path, key="speeds")


def test_verify_metr_h5_reports_without_raising(tmp_path: Path) -> None:
    path = tmp_path / "copy.h5"
    small_frame().to_hdf(path, key="df")
    report = verify_metr_h5(path)
    assert not report.ok
    assert report.rows == 6
    assert any("blob" in p for p in report.problems)
    assert any("34272" in p for p in report.problems)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    assert not verify_metr_h5(junk).ok
    assert "differs" in str(verify_metr_h5(junk))


def test_git_blob_id_matches_git(tmp_path: Path) -> None:
    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello\n")
    assert git_blob_id(path) == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object


# ----------------------------------------------------------------------------- Parquet


def test_parquet_wide_round_trip_keeps_nan_and_attrs(tmp_path: Path) -> None:
    frame = load_speeds(_h5(tmp_path))
    frame.attrs = {"synthetic": True, "source": "test"}
    path = save_parquet(frame, tmp_path / "wide.parquet")
    loaded = load_parquet(path)
    pd.testing.assert_frame_equal(loaded, frame)
    assert loaded.attrs == frame.attrs
    assert pq.read_schema(path).metadata[b"synthetic"] == b"true"


def test_parquet_long_round_trip(tmp_path: Path) -> None:
    frame = load_speeds(_h5(tmp_path))
    long = to_long(frame)
    assert list(long.columns) == ["sensor_id", "timestamp", "speed_mph"]
    assert len(long) == frame.size
    assert int(long["speed_mph"].isna().sum()) == 2
    assert long["timestamp"].is_monotonic_increasing
    loaded = load_speeds(save_parquet(frame, tmp_path / "long.parquet", long=True))
    pd.testing.assert_frame_equal(loaded, frame)


def test_long_form_accepts_shuffled_rows_and_int_ids(tmp_path: Path) -> None:
    long = to_long(small_frame(zeros=False)).sample(frac=1.0, random_state=0)
    long["sensor_id"] = long["sensor_id"].astype(int)
    long.to_parquet(tmp_path / "shuffled.parquet")
    loaded = load_parquet(tmp_path / "shuffled.parquet")
    assert loaded.index.is_monotonic_increasing
    np.testing.assert_array_equal(
        loaded[small_frame().columns].to_numpy(), small_frame(zeros=False).to_numpy()
    )


def test_to_long_treats_metr_zeros_as_missing() -> None:
    assert int(to_long(small_frame())["speed_mph"].isna().sum()) == 2


def _h5(tmp_path: Path) -> Path:
    path = tmp_path / "small.h5"
    small_frame().to_hdf(path, key="df")
    return path


# ----------------------------------------------------------------------------- bad inputs


def _write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("non-numeric", "1,2\n50,60\n55,abc\n", "non-numeric speed columns \\['2'\\]"),
        ("duplicate columns", "1,1\n50,60\n", "duplicate sensor columns"),
        (
            "duplicate timestamps",
            "timestamp,1\n2012-03-01 00:00,50\n2012-03-01 00:00,51\n",
            "duplicate timestamps",
        ),
        (
            "10-minute gap",
            "timestamp,1\n2012-03-01 00:00,50\n2012-03-01 00:10,51\n",
            "consecutive 5min steps; 2012-03-01 00:00:00 is followed by 2012-03-01 00:10:00",
        ),
        ("timezone", "timestamp,1\n2012-03-01 00:00+00:00,50\n", "timezone-aware"),
        ("empty", "1,2\n", "no speed data"),
    ],
)
def test_bad_csv_raises_clear_error(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_speeds(_write_csv(tmp_path, text))


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"unknown speed file format '\.txt'"):
        load_speeds(tmp_path / "speeds.txt")
    with pytest.raises(DatasetError, match="not found"):
        load_speeds(tmp_path / "absent.parquet")
    assert issubclass(DatasetError, ValueError)


def test_bad_parquet_raises_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match="not a readable Parquet"):
        load_speeds(junk)
    long = to_long(small_frame(zeros=False))
    pd.concat([long, long.head(1)]).to_parquet(tmp_path / "dup.parquet")
    with pytest.raises(DatasetError, match="duplicate \\(sensor_id, timestamp\\)"):
        load_speeds(tmp_path / "dup.parquet")
    pd.DataFrame({"a": [1.0]}).to_parquet(tmp_path / "shape.parquet")
    with pytest.raises(DatasetError, match="expected a timestamp index"):
        load_speeds(tmp_path / "shape.parquet")


def test_default_data_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRAFFIC_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("TRAFFIC_DATA_DIR")
    assert default_data_dir().parts[-2:] == ("shared", "data")


# ----------------------------------------------------------------------------- graphs


def test_metr_la_graph_is_consistent(data_dir: Path, six_days: pd.DataFrame) -> None:
    graph = load_metr_la_graph(data_dir)
    assert len(graph) == 207
    assert graph.adjacency.shape == (207, 207) and graph.adjacency.dtype == np.float32
    assert graph.sensor_ids == list(six_days.columns)
    assert list(graph.locations["sensor_id"]) == graph.sensor_ids
    assert graph.locations["latitude"].between(33.5, 34.5).all()
    assert graph.index_of("773869") == 0
    src, dst, weight = graph.edges()
    assert (weight > 0).all() and (src != dst).all()
    up, down = graph.sensor_ids[src[0]], graph.sensor_ids[dst[0]]
    assert up in graph.upstream(down) and down in graph.downstream(up)
    assert len(graph.neighbours(up, k=3)) == 3
    with pytest.raises(KeyError, match="unknown sensor id"):
        graph.index_of("nope")


def test_pems_bay_graph_is_consistent(data_dir: Path) -> None:
    graph = load_pems_bay_graph(data_dir)
    assert len(graph) == 325
    assert graph.adjacency.shape == (325, 325)
    assert graph.sensor_ids[0] == "400001"
    assert list(graph.locations["sensor_id"]) == graph.sensor_ids
    assert graph.locations["longitude"].between(-122.5, -121.5).all()
    assert load_pems_bay_graph(data_dir / "pems-bay").sensor_ids == graph.sensor_ids


def test_graph_mismatches_raise(data_dir: Path, tmp_path: Path) -> None:
    metr = data_dir / "metr-la"
    short = tmp_path / "locations.csv"
    lines = (metr / "graph_sensor_locations.csv").read_text().splitlines()
    short.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DatasetError, match="207 sensor ids but 206 locations"):
        load_graph(metr / "adj_mx.pkl", short)
    bad_pickle = tmp_path / "adj.pkl"
    ids = [f"s{i}" for i in range(3)]
    with bad_pickle.open("wb") as fh:
        pickle.dump((ids, {s: i for i, s in enumerate(ids)}, np.eye(4)), fh)
    locations = tmp_path / "loc.csv"
    locations.write_text("".join(f"{s},34.0,-118.0\n" for s in ids))
    with pytest.raises(DatasetError, match="adjacency is \\(4, 4\\) but there are 3 sensor ids"):
        load_graph(bad_pickle, locations)
    with pytest.raises(DatasetError, match="not found"):
        load_graph(tmp_path / "absent.pkl", locations)


def test_subgraph_keeps_weights(data_dir: Path) -> None:
    graph = load_metr_la_graph(data_dir)
    ids = graph.sensor_ids[:5]
    sub = graph.subgraph(ids)
    assert isinstance(sub, SensorGraph)
    np.testing.assert_array_equal(sub.adjacency, graph.adjacency[:5, :5])


def test_unreadable_h5_raises_dataset_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(DatasetError, match="not a readable pandas HDF5"):
        load_speeds(junk)
