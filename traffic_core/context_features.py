"""Incident and weather features, joined to the speed features when those sources are present.

Declared apart from `FEATURE_NAMES` on purpose: the models trained and served today use exactly
`FEATURE_NAMES`, so adding these columns changes none of them, and a source that is absent
gives missing values (NaN), never a made-up "no incident" or "dry". A model that wants them
selects `FEATURE_NAMES + CONTEXT_FEATURE_NAMES`.

Incidents: one reaches a sensor when it is at the sensor or within `max_hops` links of it on the
road graph, either way: downstream of the sensor its queue backs up towards it, upstream of it
the sensor is on the incident's road ahead. `incident_hops` is signed (negative: the incident is
upstream of the sensor, positive: downstream, 0: at it), so a model can tell the two apart. Only
what is known at the moment is used (started, not yet ended); never the duration.

Weather: the network-wide latest observation at or before the moment within `tolerance`
(stations averaged), so a forecast never sees a later observation.

`context_is_synthetic` marks rows whose incident or weather values come from synthetic records.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import dijkstra

from traffic_core.features import FeatureContext, long_frame

INCIDENT_FEATURES = (
    "incident_active",
    "incident_minutes_since_start",
    "incident_severity",
    "incident_hops",
)
WEATHER_FEATURES = ("precipitation_mm", "visibility_km")
CONTEXT_FEATURE_NAMES: tuple[str, ...] = (*INCIDENT_FEATURES, *WEATHER_FEATURES)
SYNTHETIC_COLUMN = "context_is_synthetic"

SEVERITY_LEVELS = {"UNKNOWN": np.nan, "MINOR": 1.0, "MODERATE": 2.0, "MAJOR": 3.0, "SEVERE": 4.0}
"""The incident contract's levels as numbers; an unknown severity stays missing."""


@dataclass(frozen=True)
class ContextSettings:
    max_hops: int = 2
    """Road-graph links within which an incident counts (a METR-LA link is ~7 neighbours)."""
    tolerance: timedelta = timedelta(minutes=90)
    """Oldest weather observation still taken as the current weather."""
    open_incident: timedelta = timedelta(hours=6)
    """How long an incident without an end report stays active after its start."""


def latest_reports(incidents: pd.DataFrame) -> pd.DataFrame:
    """One row per incident id: its last report (an update, e.g. the end time, replaces the
    first), in the order given (Kafka order in the lake)."""
    return incidents.drop_duplicates("incident_id", keep="last")


def _naive_utc(values: pd.Series | pd.DatetimeIndex) -> pd.Series | pd.DatetimeIndex:
    """Timestamps as tz-naive UTC, the features' clock (the lake stores them tz-aware)."""
    stamps = pd.to_datetime(values)
    if getattr(stamps.dt if isinstance(stamps, pd.Series) else stamps, "tz", None) is None:
        return stamps
    if isinstance(stamps, pd.Series):
        return stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps.tz_convert("UTC").tz_localize(None)


def incident_reach(context: FeatureContext, origins: Sequence[int], max_hops: int) -> np.ndarray:
    """(len(origins), sensors) signed hops from each incident's sensor to every sensor within
    `max_hops` links (NaN beyond): negative where the incident is upstream of the sensor."""
    links = sparse.csr_array(context.adjacency > 0, dtype="float64")
    links.setdiag(0)
    links.eliminate_zeros()
    if not len(origins):
        return np.empty((0, len(context.sensor_ids)))
    ahead = dijkstra(links, directed=True, unweighted=True, indices=origins, limit=max_hops)
    behind = dijkstra(links.T, directed=True, unweighted=True, indices=origins, limit=max_hops)
    # ahead: the sensor is downstream of the incident (incident upstream: negative hops)
    hops = np.where(np.isfinite(behind), behind, np.nan)
    closer_ahead = np.isfinite(ahead) & ~(behind <= ahead)
    return np.where(closer_ahead, -ahead, hops)


def incident_block(
    stamps: pd.DatetimeIndex,
    context: FeatureContext,
    incidents: pd.DataFrame | None,
    settings: ContextSettings = ContextSettings(),
) -> tuple[np.ndarray, np.ndarray]:
    """(len(INCIDENT_FEATURES), T, sensors) features and a (T, sensors) synthetic mask."""
    n_t, n_s = len(stamps), len(context.sensor_ids)
    synthetic = np.zeros((n_t, n_s), dtype=bool)
    if incidents is None:
        return np.full((len(INCIDENT_FEATURES), n_t, n_s), np.nan), synthetic
    active = np.zeros((n_t, n_s))
    since = np.full((n_t, n_s), np.nan)
    severity = np.zeros((n_t, n_s))
    hops = np.full((n_t, n_s), np.nan)
    index = {s: i for i, s in enumerate(context.sensor_ids)}
    reports = latest_reports(incidents)
    reports = reports[reports["sensor_id"].astype(str).isin(index)]
    start = _naive_utc(reports["start_time"])
    end = _naive_utc(reports["end_time"]).fillna(start + settings.open_incident)
    reach = incident_reach(
        context, [index[str(s)] for s in reports["sensor_id"]], settings.max_hops
    )
    times = np.asarray(stamps, dtype="datetime64[ns]")
    for k, (level, fake) in enumerate(
        zip(reports["severity"], reports["is_synthetic"], strict=True)
    ):
        began, ended = start.iloc[k].to_datetime64(), end.iloc[k].to_datetime64()
        rows = np.flatnonzero((times >= began) & (times < ended))
        cols = np.flatnonzero(~np.isnan(reach[k]))
        if not rows.size or not cols.size:
            continue
        cell = np.ix_(rows, cols)
        minutes = ((times[rows] - began) / np.timedelta64(1, "m"))[:, None]
        distance = np.broadcast_to(reach[k, cols], (rows.size, cols.size))
        # the nearest incident (then the latest started) names the minutes and the hops
        current = hops[cell]
        nearer = np.isnan(current) | (np.abs(distance) < np.abs(current))
        tie = np.abs(distance) == np.abs(current)
        replace = nearer | (tie & ~(since[cell] < minutes))
        hops[cell] = np.where(replace, distance, current)
        since[cell] = np.where(replace, minutes, since[cell])
        severity[cell] = np.fmax(severity[cell], SEVERITY_LEVELS.get(level, np.nan))
        active[cell] = 1.0
        synthetic[cell] |= bool(fake)
    severity[(active == 1.0) & (severity == 0.0)] = np.nan  # active, of unknown severity only
    return np.stack([active, since, severity, hops]), synthetic


def weather_block(
    stamps: pd.DatetimeIndex,
    n_sensors: int,
    weather: pd.DataFrame | None,
    settings: ContextSettings = ContextSettings(),
) -> tuple[np.ndarray, np.ndarray]:
    """(len(WEATHER_FEATURES), T, sensors) and a (T, sensors) synthetic mask: the latest
    observation at or before each moment within the tolerance, averaged over stations."""
    n_t = len(stamps)
    if weather is None:
        shape = (len(WEATHER_FEATURES), n_t, n_sensors)
        return np.full(shape, np.nan), np.zeros((n_t, n_sensors), dtype=bool)
    moments = pd.DataFrame({"moment": pd.DatetimeIndex(stamps).astype("datetime64[ns]")})
    observed = weather.assign(
        observed_at=_naive_utc(weather["observed_at"]).astype("datetime64[ns]"),
        synthetic=weather["is_synthetic"].astype("float64"),
    ).sort_values("observed_at", kind="stable")
    columns = [*WEATHER_FEATURES, "synthetic"]
    per_station = [
        pd.merge_asof(
            moments,
            group[["observed_at", *columns]].astype({c: "float64" for c in columns}),
            left_on="moment",
            right_on="observed_at",
            direction="backward",
            tolerance=settings.tolerance,
        )[columns].to_numpy()
        for _, group in observed.groupby("station_id", sort=True)
    ]
    stacked = np.stack(per_station) if per_station else np.full((1, n_t, 3), np.nan)
    with warnings.catch_warnings():  # moments without any observation stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(stacked, axis=0)  # (T, 3)
    values = np.broadcast_to(means[:, :2].T[:, :, None], (2, n_t, n_sensors))
    synthetic = np.broadcast_to((means[:, 2] > 0)[:, None], (n_t, n_sensors))
    return values, synthetic


def context_features(
    stamps: pd.DatetimeIndex,
    context: FeatureContext,
    incidents: pd.DataFrame | None = None,
    weather: pd.DataFrame | None = None,
    settings: ContextSettings = ContextSettings(),
) -> pd.DataFrame:
    """Long frame (timestamp, sensor_id, *CONTEXT_FEATURE_NAMES, context_is_synthetic) in
    `make_features`' row order. None for a source: it is absent, and its columns are NaN."""
    stamps = pd.DatetimeIndex(stamps)
    accidents, fake_incidents = incident_block(stamps, context, incidents, settings)
    rain, fake_weather = weather_block(stamps, len(context.sensor_ids), weather, settings)
    block = np.concatenate([accidents, rain])
    frame = long_frame(stamps, context.sensor_ids, CONTEXT_FEATURE_NAMES, block)
    frame[SYNTHETIC_COLUMN] = (fake_incidents | fake_weather).reshape(-1)
    return frame


def with_context_features(
    features: pd.DataFrame,
    context: FeatureContext,
    incidents: pd.DataFrame | None = None,
    weather: pd.DataFrame | None = None,
    settings: ContextSettings = ContextSettings(),
) -> pd.DataFrame:
    """`features` (from `make_features`) with the context columns added; its own columns and
    rows are left exactly as they were."""
    stamps = pd.DatetimeIndex(features["timestamp"].unique())
    extra = context_features(stamps, context, incidents, weather, settings)
    return features.merge(extra, on=["timestamp", "sensor_id"], how="left", validate="1:1")
