"""What a served forecast may be: made from enough input, and a speed a road can have.

The minimum input: a sensor's forecast needs its reading at the window it is issued for and at
least `MIN_LAG_READINGS` of the `LOOKBACK` windows (the hour the features look back over,
that window included). Below it the model extrapolates from features it has rarely seen
missing together (a regression then answers -88 mph), so the forecast is withheld: its speed
and interval are null and `reason` says why, in the order checked:

- `warming_up`: the service has held readings for less than that hour (it started, or
  rebuilt its state from Kafka after a restart, within it), so it cannot tell what the
  sensors sent before; every sensor's forecast at such a window is withheld;
- `sensor_offline`: no reading at all in the hour;
- `no_current_reading`: none at the window the forecast is issued for;
- `insufficient_history`: fewer than `MIN_LAG_READINGS` readings in the hour;
- `model_output_invalid`: the model answered NaN or infinity for that horizon.

A forecast made from enough input is clipped to [0, `MAX_FORECAST_MPH`] (the largest speed a
reading may carry, `ValidationConfig.max_speed_mph`), and its interval to
lower <= speed <= upper within the same range. All of it runs once per window close, on arrays
of every sensor; requests only read the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from traffic_core.events.validation import ValidationConfig
from traffic_core.features import LOOKBACK

GapReason = Literal[
    "warming_up",
    "sensor_offline",
    "no_current_reading",
    "insufficient_history",
    "model_output_invalid",
]
GAP_REASONS: tuple[str, ...] = get_args(GapReason)
MAX_FORECAST_MPH = ValidationConfig().max_speed_mph
MIN_LAG_READINGS = LOOKBACK // 2
"""Readings a sensor needs among the last LOOKBACK windows (half the hour)."""


def input_gaps(lag_window: np.ndarray, warming_up: bool = False) -> np.ndarray:
    """Per sensor, why its input is below the minimum (None where it suffices), from its
    speeds over the LOOKBACK windows up to the forecast's window (rows oldest first, NaN
    missing; fewer rows count as missing windows); `warming_up`: the holder of the speeds
    did not hold that whole hour."""
    valid = ~np.isnan(np.asarray(lag_window, dtype="float64")[-LOOKBACK:])
    readings = valid.sum(axis=0)
    current = valid[-1] if len(valid) else np.zeros(valid.shape[1], dtype=bool)
    reasons = np.full(valid.shape[1], None, dtype=object)
    reasons[readings < MIN_LAG_READINGS] = "insufficient_history"
    reasons[~current] = "no_current_reading"
    reasons[readings == 0] = "sensor_offline"
    if warming_up:
        reasons[:] = "warming_up"
    return reasons


@dataclass(frozen=True)
class Bounded:
    """One horizon's served forecast for every sensor: NaN speed and bounds where `reasons`
    holds a gap reason, otherwise 0 <= lower <= speed <= upper <= MAX_FORECAST_MPH."""

    speed: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    reasons: np.ndarray


def bounded(point: np.ndarray, half_width: float | np.ndarray, gaps: np.ndarray) -> Bounded:
    """The model's point forecasts made servable: withheld where the input is short
    (`gaps` from `input_gaps`) or the output is not finite, clipped elsewhere. `half_width`
    is one for all sensors or one per sensor (a Mondrian interval)."""
    raw = np.asarray(point, dtype="float64")
    reasons = gaps.copy()
    reasons[(reasons == None) & ~np.isfinite(raw)] = "model_output_invalid"  # noqa: E711
    withheld = reasons != None  # noqa: E711
    speed = np.where(withheld, np.nan, np.clip(raw, 0.0, MAX_FORECAST_MPH))
    widths = np.asarray(half_width, dtype="float64")
    q = np.where(np.isfinite(widths), np.abs(widths), MAX_FORECAST_MPH)
    lower = np.minimum(np.clip(speed - q, 0.0, MAX_FORECAST_MPH), speed)
    upper = np.maximum(np.clip(speed + q, 0.0, MAX_FORECAST_MPH), speed)
    return Bounded(speed, lower, upper, reasons)


def plausible(speed: float | None, lower: float | None, upper: float | None) -> bool:
    """Whether a served (speed, lower, upper) keeps the rules above: all null, or all set
    with 0 <= lower <= speed <= upper <= MAX_FORECAST_MPH."""
    values = (speed, lower, upper)
    if all(v is None for v in values):
        return True
    if any(v is None for v in values):
        return False
    return 0.0 <= lower <= speed <= upper <= MAX_FORECAST_MPH  # type: ignore[operator]
