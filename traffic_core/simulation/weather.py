"""SYNTHETIC weather for simulated runs: hourly observations of one station, rain spells and
morning fog, and the slowdown rain causes on the simulated speeds.

Los Angeles is dry most days; rain comes in spells of a few hours. Rain slows freeway traffic
by a few percent per millimetre an hour (capped), fog cuts visibility but is left without a
speed effect. The effect is applied to finished speeds (`slow_for_weather`), so simulations
without weather stay exactly as they were.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from traffic_core.simulation.seeds import WEATHER_STREAM

STATION = "SYN-LAX"
CLEAR_VISIBILITY_KM = 16.0
RAIN_SPELLS_PER_DAY = 0.25
SLOWDOWN_PER_MM = 0.04
MAX_SLOWDOWN = 0.2


def simulate_weather(
    start: str | pd.Timestamp,
    days: int,
    seed: int = 0,
    *,
    spells_per_day: float = RAIN_SPELLS_PER_DAY,
) -> pd.DataFrame:
    """Hourly observations (the weather contract's columns, tz-naive UTC observed_at), all
    labelled synthetic; precipitation is the millimetres of the hour before."""
    rng = np.random.default_rng([seed, WEATHER_STREAM])
    hours = days * 24
    stamps = pd.date_range(pd.Timestamp(start), periods=hours, freq="1h")
    rain = np.zeros(hours)
    for _ in range(rng.poisson(spells_per_day * days)):
        begin = int(rng.integers(0, hours))
        length = int(np.clip(np.rint(rng.lognormal(np.log(4), 0.6)), 1, 24))
        peak = rng.gamma(2.0, 1.5)
        shape = np.sin(np.linspace(0, np.pi, length + 2)[1:-1])
        rain[begin : begin + length] += (peak * shape)[: hours - begin]
    rain = np.round(rain, 1)
    fog = (stamps.hour >= 5) & (stamps.hour <= 9) & (rng.random(hours) < 0.08)
    visibility = CLEAR_VISIBILITY_KM / (1 + 0.6 * rain) * np.where(fog, 0.2, 1.0)
    temperature = 15 + 5 * np.sin(2 * np.pi * (stamps.hour - 9) / 24) - 0.8 * rain
    return pd.DataFrame(
        {
            "station_id": STATION,
            "observed_at": stamps,
            "temperature_c": np.round(temperature + rng.normal(0, 0.5, hours), 1),
            "precipitation_mm": rain,
            "visibility_km": np.round(visibility, 1),
            "source": "synthetic",
            "is_synthetic": True,
        }
    )


def slow_for_weather(speeds: pd.DataFrame, weather: pd.DataFrame) -> pd.DataFrame:
    """Speeds (0.0 = missing kept as is) slowed during rain: each 5-minute step takes the rain
    of the hour it falls in (the observation at the hour's end)."""
    hourly = weather.set_index("observed_at")["precipitation_mm"].fillna(0.0)
    rain = hourly.reindex(speeds.index.ceil("1h"), fill_value=0.0).to_numpy()
    factor = 1 - np.minimum(MAX_SLOWDOWN, SLOWDOWN_PER_MM * rain)
    out = speeds * factor[:, None].astype(speeds.dtypes.iloc[0])
    out.attrs = dict(speeds.attrs)
    return out
