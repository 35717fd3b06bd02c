"""Forecasts for every sensor at one window, made once when the window closes and then served
from memory: a request only looks up bytes already encoded, which keeps p99 in milliseconds.

The features come from `traffic_core.features.make_features(..., at=t)`, the same code that
built the training rows, and the model from a `ModelBundle` (onnxruntime only). What the model
answers is made servable here too (`serving.plausibility`): withheld with a reason where the
input is below the minimum, clipped to a plausible speed elsewhere; every place forecasts go
(one-sensor and batch answers, history, pushes, Kafka, alerts) reads these snapshots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd

from serving.plausibility import Bounded, bounded, input_gaps
from traffic_core.features import FEATURE_NAMES, HORIZONS, LOOKBACK, make_features, on_grid
from traffic_core.model_bundle import ModelBundle
from traffic_core.predictive import PROBABILITY_CLASSES
from traffic_core.windows import DEFAULT_THRESHOLDS, WINDOW, CongestionThresholds


def mph(value: float) -> float | None:
    """A speed for JSON: two decimals, NaN as null (never 0 mph, which means missing)."""
    return None if np.isnan(value) else round(float(value), 2)


def utc(stamp: pd.Timestamp) -> datetime:
    zoned = stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")
    return zoned.to_pydatetime()


def chances(probabilities: np.ndarray | None, sensors: int) -> list[dict[str, float] | None]:
    """Per sensor, its class probabilities for JSON (three decimals), None where unknown."""
    if probabilities is None:
        return [None] * sensors
    return [
        None
        if np.isnan(row).any()
        else dict(zip(PROBABILITY_CLASSES, row.round(3).tolist(), strict=True))
        for row in probabilities
    ]


@dataclass(frozen=True, eq=False)
class ForecastSnapshot:
    """Forecasts of all sensors issued at window `issued_for` by one model version."""

    issued_for: pd.Timestamp
    model_version: str
    synthetic: bool
    sensor_ids: tuple[str, ...]
    observed: np.ndarray
    forecasts: dict[int, Bounded]
    """Per horizon (minutes), the served speeds, bounds and gap reasons of every sensor."""
    coverage: float
    thresholds: CongestionThresholds = DEFAULT_THRESHOLDS
    sources: Sequence[dict[str, Any] | None] | None = None
    """Per sensor, the origin of its newest reading used (OneForecast.source); None: unknown."""
    probabilities: Mapping[int, np.ndarray] | None = None
    """Per horizon, P(severe, congested, free flow) of every sensor (NaN rows where withheld);
    None for a model without a per-regime calibration."""
    incidents: Mapping[str, list[dict[str, Any]]] | None = None
    """Per sensor, the active incidents near it (SensorForecast.incidents); None: none."""
    _index: dict[str, int] = field(init=False, repr=False)
    _rows: list[dict[str, Any]] = field(init=False, repr=False)
    _one: list[bytes] = field(init=False, repr=False)
    _all: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "_index", {s: i for i, s in enumerate(self.sensor_ids)})
        rows = self._rows_of_all()
        head = {"model_version": self.model_version, "synthetic": self.synthetic}
        set_(self, "_rows", rows)
        sources = self.sources or [None] * len(rows)
        set_(
            self,
            "_one",
            [
                orjson.dumps({**row, **head, "source": source})
                for row, source in zip(rows, sources, strict=True)
            ],
        )
        set_(self, "_all", self.batch_json(None))

    @property
    def point(self) -> dict[int, np.ndarray]:
        """Served point forecasts per horizon, NaN where withheld."""
        return {minutes: f.speed for minutes, f in self.forecasts.items()}

    def _rows_of_all(self) -> list[dict[str, Any]]:
        """SensorForecast bodies, classes computed for all sensors at once."""
        classify = self.thresholds.classify
        issued = utc(self.issued_for)
        observed_class = classify(self.observed)
        flags = self.incidents or {}
        per_horizon = [
            (
                minutes,
                utc(self.issued_for + steps * WINDOW),
                self.forecasts[minutes],
                classify(self.forecasts[minutes].speed),
                chances(
                    self.probabilities.get(minutes) if self.probabilities else None,
                    len(self.sensor_ids),
                ),
            )
            for minutes, steps in HORIZONS.items()
        ]
        return [
            {
                "sensor_id": sensor,
                "issued_for": issued,
                "observed_speed_mph": mph(self.observed[i]),
                "observed_congestion": observed_class[i],
                "horizons": [
                    {
                        "minutes": minutes,
                        "target_time": target,
                        "speed_mph": mph(f.speed[i]),
                        "lower_mph": mph(f.lower[i]),
                        "upper_mph": mph(f.upper[i]),
                        "coverage": self.coverage,
                        "congestion": classes[i],
                        "reason": f.reasons[i],
                        "probabilities": probabilities[i],
                    }
                    for minutes, target, f, classes, probabilities in per_horizon
                ],
                "incidents": flags.get(sensor, []),
            }
            for i, sensor in enumerate(self.sensor_ids)
        ]

    def __contains__(self, sensor_id: str) -> bool:
        return sensor_id in self._index

    def one_json(self, sensor_id: str) -> bytes:
        """A OneForecast body; KeyError for a sensor the model does not forecast."""
        return self._one[self._index[sensor_id]]

    def row(self, sensor_id: str) -> dict[str, Any]:
        return self._rows[self._index[sensor_id]]

    def batch_json(self, sensor_ids: Sequence[str] | None) -> bytes:
        """A ForecastBatch body for the given sensors (all when None)."""
        if sensor_ids is None and hasattr(self, "_all"):
            return self._all
        rows = self._rows if sensor_ids is None else [self.row(s) for s in sensor_ids]
        return orjson.dumps(
            {
                "model_version": self.model_version,
                "issued_for": utc(self.issued_for),
                "synthetic": self.synthetic,
                "forecasts": rows,
            }
        )

    def horizon(self, sensor_id: str, minutes: int) -> dict[str, Any]:
        return next(h for h in self.row(sensor_id)["horizons"] if h["minutes"] == minutes)


def forecast_all(
    bundle: ModelBundle,
    speeds: pd.DataFrame,
    at: pd.Timestamp,
    synthetic: bool,
    thresholds: CongestionThresholds = DEFAULT_THRESHOLDS,
    sources: Sequence[dict[str, Any] | None] | None = None,
    held_from: pd.Timestamp | None = None,
    incidents: Mapping[str, list[dict[str, Any]]] | None = None,
) -> ForecastSnapshot:
    """Forecasts for every sensor of the model's context from the wide speed frame (the hour
    up to `at` is enough; missing readings stay NaN): a sensor below the minimum input of
    `serving.plausibility` gets none, with the reason. `sources` (in the context's sensor
    order) say where each sensor's newest reading came from; `held_from`: the oldest window
    the caller holds readings for (None: all of `speeds` is what there is); `incidents`: the
    active incidents near each sensor."""
    frame = make_features(speeds, bundle.context, at=at)
    points = bundle.predict(frame[list(FEATURE_NAMES)].to_numpy())
    hour_start = at - (LOOKBACK - 1) * WINDOW
    lag_window = on_grid(speeds, bundle.context.sensor_ids, hour_start, at)
    gaps = input_gaps(lag_window.to_numpy(), held_from is not None and held_from > hour_start)
    observed = (
        speeds.reindex(columns=bundle.context.sensor_ids).loc[at].to_numpy(dtype="float64")
        if at in speeds.index
        else np.full(len(bundle.context.sensor_ids), np.nan)
    )
    observed = np.where(observed == 0.0, np.nan, observed)
    regimes = bundle.regimes
    forecasts = {
        m: bounded(
            points[m],
            regimes[m].half_widths(observed) if m in regimes else bundle.half_widths[m],
            gaps,
        )
        for m in HORIZONS
    }
    return ForecastSnapshot(
        issued_for=at,
        model_version=bundle.version,
        synthetic=synthetic,
        sensor_ids=tuple(bundle.context.sensor_ids),
        observed=observed,
        forecasts=forecasts,
        coverage=bundle.coverage,
        thresholds=thresholds,
        sources=sources,
        probabilities={
            m: r.probabilities(forecasts[m].speed, observed, thresholds) for m, r in regimes.items()
        }
        or None,
        incidents=incidents,
    )


class ReadingsError(ValueError):
    """Readings a forecast cannot be made from (the API answers 422)."""


def readings_to_speeds(readings: pd.DataFrame) -> pd.DataFrame:
    """(sensor_id, timestamp, speed_mph) rows → wide 5-minute mean speeds, UTC, NaN missing."""
    stamps = pd.to_datetime(readings["timestamp"], utc=True).dt.floor(WINDOW)
    speed = pd.to_numeric(readings["speed_mph"], errors="coerce").replace(0.0, np.nan)
    frame = pd.DataFrame({"t": stamps, "s": readings["sensor_id"].astype(str), "v": speed})
    return frame.pivot_table(index="t", columns="s", values="v", aggfunc="mean", dropna=False)


def forecast_from_readings(
    bundle: ModelBundle,
    readings: pd.DataFrame,
    at: pd.Timestamp | None,
    thresholds: CongestionThresholds = DEFAULT_THRESHOLDS,
) -> ForecastSnapshot:
    """Forecasts for the callers' own readings (synthetic: False is the caller's claim)."""
    speeds = readings_to_speeds(readings)
    moment = speeds.index.max() if at is None else pd.Timestamp(at)
    moment = moment.tz_localize("UTC") if moment.tz is None else moment.tz_convert("UTC")
    if moment != moment.floor(WINDOW):
        raise ReadingsError(f"at={moment.isoformat()} is not a 5-minute window start")
    if speeds.index.min() > moment:
        raise ReadingsError(f"no reading at or before at={moment.isoformat()}")
    snapshot = forecast_all(bundle, speeds, moment, synthetic=False, thresholds=thresholds)
    return snapshot
