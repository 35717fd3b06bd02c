"""Synthetic data: determinism, shape, realism checks against the real calibration files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from traffic_core.datasets import default_data_dir, load_pems_bay_graph, load_speeds
from traffic_core.simulation import (
    INCIDENT_COLUMNS,
    SimulatedDataset,
    Simulator,
    incidents_path,
    simulate,
    synthetic_graph,
)
from traffic_core.simulation.__main__ import main


@pytest.fixture(scope="module")
def data_dir() -> Path:
    root = default_data_dir()
    if not (root / "metr-la" / "week_average.npy").is_file():
        pytest.fail(f"shared METR-LA data expected at {root} (or set TRAFFIC_DATA_DIR)")
    return root


@pytest.fixture(scope="module")
def week(data_dir: Path) -> np.ndarray:
    return np.load(data_dir / "metr-la" / "week_average.npy")


@pytest.fixture(scope="module")
def four_weeks(data_dir: Path) -> SimulatedDataset:
    return simulate(28, 207, seed=1, data_dir=data_dir)


def test_same_seed_same_data_other_seed_differs() -> None:
    a, b = simulate(3, 40, seed=5), simulate(3, 40, seed=5)
    pd.testing.assert_frame_equal(a.speeds, b.speeds)
    pd.testing.assert_frame_equal(a.incidents, b.incidents)
    c = simulate(3, 40, seed=6)
    assert not np.array_equal(a.speeds.to_numpy(), c.speeds.to_numpy())


def test_chunking_does_not_change_the_data() -> None:
    sim = Simulator(5, 30, seed=2)
    chunks = list(sim.iter_chunks(chunk_days=2))
    assert [len(c) for c in chunks] == [576, 576, 288]
    assert all(c.attrs["synthetic"] for c in chunks)
    pd.testing.assert_frame_equal(pd.concat(chunks), sim.run().speeds, check_freq=False)


@pytest.mark.parametrize(
    ("days", "sensors", "graph"),
    [(1, 5, "metr-la subset"), (2, 300, "synthetic"), (8, 207, "metr-la")],
)
def test_shape_for_any_span_and_sensor_count(days: int, sensors: int, graph: str) -> None:
    ds = simulate(days, sensors, seed=0, start="2012-05-01 00:00")
    speeds = ds.speeds
    assert speeds.shape == (days * 288, sensors)
    assert speeds.index[0] == pd.Timestamp("2012-05-01") and speeds.index.freq == "5min"
    assert speeds.index.name == "timestamp"
    assert speeds.columns.is_unique and all(isinstance(c, str) for c in speeds.columns)
    assert set(speeds.dtypes) == {np.dtype(np.float32)}
    assert ds.metadata["graph"] == graph
    assert ds.graph.sensor_ids == list(speeds.columns)


def test_speed_range_and_missing_as_zero(four_weeks: SimulatedDataset) -> None:
    values = four_weeks.speeds.to_numpy()
    assert np.isfinite(values).all()
    assert values.min() >= 0 and values.max() <= 85
    assert values[values > 0].min() >= 1.0
    nan_form = four_weeks.speeds_nan()
    assert int(nan_form.isna().to_numpy().sum()) == int((values == 0).sum())
    assert nan_form.attrs["synthetic"] is True


def test_missing_share_and_outage_structure(four_weeks: SimulatedDataset) -> None:
    missing = four_weeks.speeds.to_numpy() == 0
    assert 0.05 <= missing.mean() <= 0.11
    assert missing.all(axis=1).sum() >= 3  # whole-network gaps
    lengths = _run_lengths(missing[~missing.all(axis=1)])
    assert lengths.min() == 1 and lengths.max() >= 288  # single readings up to day-long outages
    assert np.median(lengths) <= 12


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """Lengths of runs of True down each column."""
    padded = np.vstack(
        [np.zeros((1, mask.shape[1]), bool), mask, np.zeros((1, mask.shape[1]), bool)]
    )
    edges = np.diff(padded.astype(np.int8), axis=0)
    starts, stops = np.nonzero(edges.T == 1), np.nonzero(edges.T == -1)
    return stops[1] - starts[1]


def test_weekly_profile_matches_real_week(four_weeks: SimulatedDataset, week: np.ndarray) -> None:
    speeds = four_weeks.speeds.to_numpy().reshape(4, 2016, 207)
    seen = (speeds > 0).sum(axis=0)
    ok = seen > 0  # a slot can be out in all four weeks for a flaky detector
    sim_week = speeds.sum(axis=0)[ok] / seen[ok]
    assert np.corrcoef(sim_week, week.T[ok])[0, 1] > 0.9
    assert abs(sim_week.mean() - week.mean()) < 2.0


def test_other_start_weekday_is_aligned(week: np.ndarray) -> None:
    ds = simulate(
        7, 207, seed=1, start="2012-03-05", incident_rate=0, missing_rate=0, network_gap_rate=0
    )
    monday_first = np.roll(week, -4 * 288, axis=1).T
    values = ds.speeds.to_numpy()
    assert np.corrcoef(values.ravel(), monday_first.ravel())[0, 1] > 0.85
    assert np.corrcoef(values.ravel(), week.T.ravel())[0, 1] < 0.7


def test_incidents_slow_their_sensor_and_spread_upstream(four_weeks: SimulatedDataset) -> None:
    calm = simulate(28, 207, seed=1, incident_rate=0).speeds
    busy, incidents = four_weeks.speeds, four_weeks.incidents
    assert len(incidents) > 20
    affected = {s for group in incidents["affected_sensors"] for s in group}
    changed = set(busy.columns[(busy.to_numpy() != calm.to_numpy()).any(axis=0)])
    assert changed <= affected  # nothing else moves
    graph = four_weeks.graph
    checked = spread = 0
    for inc in incidents.itertuples():
        assert inc.affected_sensors[0] == inc.sensor_id
        window = slice(inc.start, inc.end - pd.Timedelta("5min"))
        drop = _drop(busy, calm, window, inc.sensor_id)
        if drop.empty:  # the detector was out during the incident
            continue
        assert drop.mean() < -2
        checked += 1
        if len(inc.affected_sensors) > 1:
            upstream = inc.affected_sensors[1]
            assert upstream in graph.upstream(inc.sensor_id)
            up_drop = _drop(busy, calm, window, upstream)
            if (up_drop < -0.1).any() and (drop < -0.1).any():
                assert up_drop.index[up_drop < -0.1][0] > drop.index[drop < -0.1][0]
                spread += 1
    assert checked > 20 and spread > 10


def _drop(busy: pd.DataFrame, calm: pd.DataFrame, window: slice, sensor: str) -> pd.Series:
    a, b = busy.loc[window, sensor], calm.loc[window, sensor]
    seen = (a > 0) & (b > 0)
    return (a - b)[seen]


def test_incident_reports_columns(four_weeks: SimulatedDataset) -> None:
    inc = four_weeks.incidents
    assert list(inc.columns) == INCIDENT_COLUMNS
    assert inc["incident_id"].is_unique
    assert (inc["end"] > inc["start"]).all()
    assert inc["severity"].between(0.2, 0.8).all()
    assert (inc["source"] == "synthetic").all() and inc.attrs["synthetic"] is True


def test_everything_says_synthetic(four_weeks: SimulatedDataset) -> None:
    assert four_weeks.speeds.attrs["synthetic"] is True
    assert four_weeks.speeds.attrs["source"] == "synthetic"
    meta = four_weeks.metadata
    assert meta["synthetic"] is True and meta["seed"] == 1
    assert meta["generator"].startswith("traffic_core.simulator")
    assert "week_average.npy" in " ".join(meta["calibration"]["files"])
    json.dumps(meta)  # serialisable as-is


def test_cli_writes_flagged_parquet_and_incident_sidecar(tmp_path: Path) -> None:
    out = tmp_path / "sim.parquet"
    assert main(["--days", "2", "--sensors", "25", "--seed", "4", "--out", str(out)]) == 0
    meta = pq.read_schema(out).metadata
    assert meta[b"synthetic"] == b"true"
    assert json.loads(meta[b"traffic_core.metadata"])["n_sensors"] == 25
    speeds = load_speeds(out)
    assert speeds.shape == (576, 25) and speeds.attrs["synthetic"] is True
    assert speeds.isna().any().any()  # zeros came back as NaN
    sidecar = incidents_path(out)
    assert pq.read_schema(sidecar).metadata[b"synthetic"] == b"true"
    pd.testing.assert_frame_equal(
        pd.read_parquet(sidecar), Simulator(2, 25, seed=4).incidents, check_dtype=False
    )


def test_synthetic_graph_is_deterministic_road_like() -> None:
    g = synthetic_graph(120, seed=3)
    assert len(g) == 120 and g.adjacency.shape == (120, 120)
    np.testing.assert_array_equal(g.adjacency, synthetic_graph(120, seed=3).adjacency)
    assert g.sensor_ids[0].startswith("syn")
    assert np.allclose(np.diag(g.adjacency), 1.0)
    src, dst, weight = g.edges()
    assert (weight >= 0.1).all() and (weight <= 1).all()
    assert np.mean(dst - src == 1) > 0.4  # mostly chains along corridors
    assert g.locations["latitude"].between(33.0, 35.0).all()
    assert g.locations.attrs["synthetic"] is True


def test_supplied_graph_uses_resampled_profiles(data_dir: Path) -> None:
    ds = simulate(1, seed=2, graph=load_pems_bay_graph(data_dir))
    assert ds.speeds.shape == (288, 325)
    assert ds.metadata["graph"] == "supplied" and ds.metadata["profiles"] == "resampled"


def test_ten_thousand_sensors_for_a_day() -> None:
    sim = Simulator(1, 10_000, seed=0)
    speeds = sim.run().speeds
    assert speeds.shape == (288, 10_000)
    values = speeds.to_numpy()
    assert np.isfinite(values).all() and values.max() <= 85
    assert 0.03 <= (values == 0).mean() <= 0.13
    assert "graph" not in sim.__dict__  # the dense 10,000 x 10,000 adjacency was never built


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="5-minute boundary"):
        Simulator(1, 5, start="2012-03-01 00:03")
    with pytest.raises(ValueError, match="at least 1"):
        Simulator(0, 5)
