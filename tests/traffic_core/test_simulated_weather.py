"""Simulated weather: deterministic, labelled synthetic, and slowing speeds only while it rains."""

from __future__ import annotations

import numpy as np
import pandas as pd

from traffic_core.events import WEATHER, EventCodec
from traffic_core.events.context_validation import check_weather
from traffic_core.events.validation import ValidationConfig
from traffic_core.simulation.weather import MAX_SLOWDOWN, simulate_weather, slow_for_weather


def test_weather_is_deterministic_synthetic_and_valid() -> None:
    weather = simulate_weather("2012-03-01", 28, seed=3)
    assert weather.equals(simulate_weather("2012-03-01", 28, seed=3))
    assert not weather.equals(simulate_weather("2012-03-01", 28, seed=4))
    assert len(weather) == 28 * 24 and weather["is_synthetic"].all()
    assert (weather["precipitation_mm"] > 0).any() and (
        weather["precipitation_mm"] == 0
    ).mean() > 0.5
    codec, now = EventCodec(WEATHER), pd.Timestamp("2013-01-01", tz="UTC").to_pydatetime()
    for record in weather.head(200).to_dict("records"):
        record["observed_at"] = record["observed_at"].tz_localize("UTC").to_pydatetime()
        decoded = codec.decode(codec.encode(record))
        assert check_weather(decoded, ValidationConfig(), now) is None


def test_rain_slows_speeds_in_its_hour_only_and_keeps_missing() -> None:
    stamps = pd.date_range("2012-03-01 00:00", periods=36, freq="5min")
    speeds = pd.DataFrame({"a": np.full(36, 60.0, np.float32), "b": np.float32(0.0)}, index=stamps)
    weather = simulate_weather("2012-03-01", 1).assign(precipitation_mm=0.0)
    weather.loc[weather["observed_at"] == pd.Timestamp("2012-03-01 02:00"), "precipitation_mm"] = (
        100.0
    )
    slowed = slow_for_weather(speeds, weather)
    rainy = (stamps > pd.Timestamp("2012-03-01 01:00")) & (
        stamps <= pd.Timestamp("2012-03-01 02:00")
    )
    np.testing.assert_allclose(slowed.loc[rainy, "a"], 60.0 * (1 - MAX_SLOWDOWN), rtol=1e-6)
    np.testing.assert_array_equal(slowed.loc[~rainy, "a"], 60.0)
    assert (slowed["b"] == 0.0).all()  # a missing reading stays the missing marker
