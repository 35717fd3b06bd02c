"""Incident and weather features: absent sources change nothing on the real days, present ones
follow their definitions (checked against a direct computation on generated cases)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from traffic_core import features as f
from traffic_core.context_features import (
    CONTEXT_FEATURE_NAMES,
    SEVERITY_LEVELS,
    SYNTHETIC_COLUMN,
    ContextSettings,
    context_features,
    with_context_features,
)
from traffic_core.datasets import load_metr_la_graph, load_speed_csv

IDS = ["A", "B", "C", "D", "E"]
T0 = pd.Timestamp("2012-03-01 08:00")
STAMPS = pd.date_range(T0, periods=36, freq="5min")


def chain_context() -> f.FeatureContext:
    """A -> B -> C -> D -> E: traffic flows from A to E."""
    adjacency = np.zeros((5, 5))
    for i in range(4):
        adjacency[i, i + 1] = 0.8
    profile = pd.DataFrame(np.full((f.WEEK_SLOTS, 5), 60.0), columns=IDS)
    return f.FeatureContext(IDS, sparse.csr_array(adjacency), profile)


def incidents(*rows: dict) -> pd.DataFrame:
    defaults = {"severity": "MAJOR", "is_synthetic": False, "end_time": None}
    return pd.DataFrame([{**defaults, **r} for r in rows])


def at(frame: pd.DataFrame, minute: int, sensor: str) -> pd.Series:
    hit = frame[
        (frame["timestamp"] == T0 + pd.Timedelta(minutes=minute)) & (frame["sensor_id"] == sensor)
    ]
    assert len(hit) == 1
    return hit.iloc[0]


def test_real_six_days_unchanged_with_sources_absent(shared_data: Path) -> None:
    speeds = load_speed_csv(shared_data / "metr-la" / "los_loop_speed_2012-03-01_to_03-06.csv")
    graph = load_metr_la_graph(shared_data / "metr-la")
    context = f.FeatureContext.from_graph(graph, f.fit_profile(speeds.loc[:"2012-03-05 23:55"]))
    plain = f.make_features(speeds, context)
    joined = with_context_features(plain, context)
    pd.testing.assert_frame_equal(joined[list(plain.columns)], plain, check_exact=True)
    assert list(joined.columns) == [*plain.columns, *CONTEXT_FEATURE_NAMES, SYNTHETIC_COLUMN]
    assert joined[list(CONTEXT_FEATURE_NAMES)].isna().all().all()
    assert not joined[SYNTHETIC_COLUMN].any()
    assert not set(CONTEXT_FEATURE_NAMES) & set(f.FEATURE_NAMES)


def test_incident_reach_timing_and_labels() -> None:
    context = chain_context()
    reports = incidents(
        {
            "incident_id": "i1",
            "sensor_id": "C",
            "start_time": pd.Timestamp("2012-03-01 08:10", tz="UTC"),
            "end_time": pd.Timestamp("2012-03-01 08:30", tz="UTC"),
            "is_synthetic": True,
        },
        # the update of i1: it lasted longer than first reported
        {
            "incident_id": "i1",
            "sensor_id": "C",
            "start_time": pd.Timestamp("2012-03-01 08:10", tz="UTC"),
            "end_time": pd.Timestamp("2012-03-01 08:45", tz="UTC"),
            "is_synthetic": True,
        },
        # no end reported: active for ContextSettings.open_incident
        {
            "incident_id": "i2",
            "sensor_id": "A",
            "start_time": pd.Timestamp("2012-03-01 09:00", tz="UTC"),
            "severity": "UNKNOWN",
        },
        {
            "incident_id": "i3",
            "sensor_id": "nowhere",
            "start_time": pd.Timestamp("2012-03-01 08:00", tz="UTC"),
        },
    )
    frame = context_features(STAMPS, context, reports, None, ContextSettings(max_hops=1))
    before = at(frame, 5, "C")
    assert before["incident_active"] == 0 and before["incident_severity"] == 0
    assert np.isnan(before["incident_hops"]) and not before[SYNTHETIC_COLUMN]
    during = {s: at(frame, 20, s) for s in IDS}
    assert [during[s]["incident_active"] for s in IDS] == [0, 1, 1, 1, 0]  # one link each way
    assert during["B"]["incident_hops"] == 1  # upstream of the incident: its queue
    assert during["C"]["incident_hops"] == 0
    assert during["D"]["incident_hops"] == -1  # downstream: the incident is upstream of it
    assert during["C"]["incident_minutes_since_start"] == 10
    assert during["C"]["incident_severity"] == SEVERITY_LEVELS["MAJOR"]
    assert during["C"][SYNTHETIC_COLUMN] and not during["A"][SYNTHETIC_COLUMN]
    assert at(frame, 40, "C")["incident_active"] == 1  # the update's end time counts
    assert at(frame, 45, "C")["incident_active"] == 0
    open_one = at(frame, 175, "B")  # i2 at A, no end: still active 2h55 later
    assert open_one["incident_active"] == 1 and open_one["incident_hops"] == -1
    assert np.isnan(open_one["incident_severity"])  # known to be active, severity unknown
    assert np.isnan(frame["precipitation_mm"]).all()  # no weather source


def brute_force_incidents(
    reports: pd.DataFrame, context: f.FeatureContext, hops: dict[tuple[str, str], int], limit: int
) -> dict[tuple[pd.Timestamp, str], tuple[float, float, float, float]]:
    """The definition, row by row: incidents active at t within `limit` links; the nearest
    (then latest started) gives minutes and signed hops; severity is the highest known."""
    out = {}
    latest = reports.drop_duplicates("incident_id", keep="last")
    for t in STAMPS:
        for sensor in context.sensor_ids:
            active = []
            for r in latest.itertuples():
                start = r.start_time.tz_localize(None)
                end = r.end_time.tz_localize(None)
                distance = hops.get((r.sensor_id, sensor))
                if distance is not None and abs(distance) <= limit and start <= t < end:
                    active.append(
                        (abs(distance), (t - start).total_seconds() / 60, distance, r.severity)
                    )
            if not active:
                out[(t, sensor)] = (0.0, np.nan, 0.0, np.nan)
                continue
            nearest = min(active, key=lambda a: (a[0], a[1]))
            levels = [SEVERITY_LEVELS[a[3]] for a in active]
            severity = np.nan if all(np.isnan(levels)) else np.nanmax(levels)
            out[(t, sensor)] = (1.0, nearest[1], severity, float(nearest[2]))
    return out


def chain_hops() -> dict[tuple[str, str], int]:
    """(incident sensor, sensor) -> signed hops on the chain: positive where the sensor is
    upstream of the incident."""
    return {(a, b): IDS.index(a) - IDS.index(b) for a in IDS for b in IDS}


@settings(derandomize=True, deadline=None, max_examples=25, database=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(IDS),
            st.integers(0, 30),
            st.integers(1, 20),
            st.sampled_from(sorted(SEVERITY_LEVELS)),
        ),
        max_size=5,
    ),
    st.integers(0, 3),
)
def test_incident_features_match_their_definition(
    spec: list[tuple[str, int, int, str]], limit: int
) -> None:
    context = chain_context()
    rows = [
        {
            "incident_id": f"i{k}",
            "sensor_id": sensor,
            "start_time": (T0 + pd.Timedelta(minutes=5 * start)).tz_localize("UTC"),
            "end_time": (T0 + pd.Timedelta(minutes=5 * (start + length))).tz_localize("UTC"),
            "severity": level,
        }
        for k, (sensor, start, length, level) in enumerate(spec)
    ]
    reports = (
        incidents(*rows)
        if rows
        else incidents().reindex(
            columns=[
                "incident_id",
                "sensor_id",
                "start_time",
                "end_time",
                "severity",
                "is_synthetic",
            ]
        )
    )
    frame = context_features(STAMPS, context, reports, None, ContextSettings(max_hops=limit))
    expected = brute_force_incidents(reports, context, chain_hops(), limit) if rows else {}
    for row in frame.itertuples(index=False):
        want = expected.get((row.timestamp, row.sensor_id), (0.0, np.nan, 0.0, np.nan))
        got = (
            row.incident_active,
            row.incident_minutes_since_start,
            row.incident_severity,
            row.incident_hops,
        )
        np.testing.assert_equal(got, want)


@settings(derandomize=True, deadline=None, max_examples=25, database=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["KLAX", "KBUR"]),
            st.integers(-30, 200),
            st.one_of(st.none(), st.floats(0, 30)),
            st.booleans(),
        ),
        max_size=8,
        unique_by=lambda o: (o[0], o[1]),
    )
)
def test_weather_is_the_latest_observation_within_tolerance(
    observations: list[tuple[str, int, float | None, bool]],
) -> None:
    context = chain_context()
    weather = pd.DataFrame(
        {
            "station_id": [o[0] for o in observations],
            "observed_at": pd.DatetimeIndex(
                [T0 + pd.Timedelta(minutes=o[1]) for o in observations]
            ).tz_localize("UTC"),
            "precipitation_mm": [o[2] for o in observations],
            "visibility_km": [10.0 for _ in observations],
            "is_synthetic": [o[3] for o in observations],
        }
    )
    tolerance = pd.Timedelta("45min")
    frame = context_features(STAMPS, context, None, weather, ContextSettings(tolerance=tolerance))
    for t in STAMPS:
        latest = []
        for station in ("KLAX", "KBUR"):
            seen = [
                o
                for o in observations
                if o[0] == station and t - tolerance <= T0 + pd.Timedelta(minutes=o[1]) <= t
            ]
            if seen:
                latest.append(max(seen, key=lambda o: o[1]))
        rain = [o[2] for o in latest if o[2] is not None]
        rows = frame[frame["timestamp"] == t]
        assert len(rows) == len(IDS)
        want = np.mean(rain) if rain else np.nan
        np.testing.assert_allclose(rows["precipitation_mm"], want, rtol=0, atol=1e-12)
        assert (rows[SYNTHETIC_COLUMN] == any(o[3] for o in latest)).all()
    assert np.isnan(frame["incident_active"]).all()  # no incident source


def test_present_but_quiet_sources_say_so() -> None:
    """An incident source with nothing active gives 0, not missing; weather with no recent
    observation stays missing (it was not observed)."""
    empty = incidents().reindex(
        columns=["incident_id", "sensor_id", "start_time", "end_time", "severity", "is_synthetic"]
    )
    weather = pd.DataFrame(
        {
            "station_id": ["KLAX"],
            "observed_at": [pd.Timestamp("2012-02-28", tz="UTC")],
            "precipitation_mm": [3.0],
            "visibility_km": [1.0],
            "is_synthetic": [False],
        }
    )
    frame = context_features(STAMPS, chain_context(), empty, weather)
    assert (frame["incident_active"] == 0).all() and (frame["incident_severity"] == 0).all()
    assert frame[["precipitation_mm", "visibility_km"]].isna().all().all()
