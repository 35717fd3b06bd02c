"""Page 2: one sensor's recent speeds against the forecasts made for them, and its alerts."""

from __future__ import annotations

import streamlit as st

from dashboard.charts import sensor_speed_chart
from dashboard.congestion import chance_text
from dashboard.context import api
from dashboard.frames import HORIZONS, alerts_frame, sensor_forecast_frame, sensor_observed_frame
from dashboard.navigation import page
from dashboard.states import SYNTHETIC_LABEL, guarded, synthetic_banner, unless_not_ready
from serving.schemas import OneForecast, SensorHistory, SensorInfo

HOURS = (1, 3, 6, 12, 24)
RECENT_ALERTS = 20
PICK = "sensor_pick"
WEATHER_STATIONS = 3
"""Stations shown on the strip (by name); the API lists them all."""


def _pick_to_url() -> None:
    st.query_params["sensor"] = st.session_state[PICK]


def render() -> None:
    st.title("Sensor detail")
    sensors = {s.sensor_id: s for s in api().sensors()}
    if not sensors:
        st.info("The API knows no sensors yet: the sensor graph is loaded with the first model.")
        return
    ids = sorted(sensors)
    wanted = st.query_params.get("sensor")
    if wanted in sensors:  # arriving from a link: the URL wins over the last pick
        st.session_state[PICK] = wanted
    left, middle, right = st.columns([2, 2, 2])
    sensor_id = left.selectbox("Sensor", ids, key=PICK, on_change=_pick_to_url)
    st.query_params["sensor"] = sensor_id  # the URL names the sensor: shareable, bookmarkable
    hours = middle.select_slider("Hours of history", HOURS, value=6, key="sensor_hours")
    horizon = right.segmented_control(
        "Forecast made", HORIZONS, format_func=lambda m: f"{m} min before", default=15
    )
    history = api().sensor_history(sensor_id, hours)
    current, no_forecast = unless_not_ready(lambda: api().forecast(sensor_id))
    synthetic_banner(history.synthetic or bool(current and current.synthetic))
    if no_forecast:
        st.warning(f"No forecasts yet ({no_forecast}): showing observed speeds only.")
    _figures(history, current)
    _incidents_near(current)
    _weather_strip()
    _chart(history, current, horizon or 15)
    _alerts(sensor_id)
    _neighbours(sensors[sensor_id])


def _figures(history: SensorHistory, current: OneForecast | None) -> None:
    latest = next((p for p in reversed(history.points) if p.observed_speed_mph is not None), None)
    cols = st.columns(5)
    now = latest.observed_speed_mph if latest else None
    typical = latest.typical_speed_mph if latest else None
    cols[0].metric("Speed now", "n/a" if now is None else f"{now:.0f} mph")
    cols[1].metric(
        "Typical for this time of week",
        "n/a" if typical is None else f"{typical:.0f} mph",
        delta=None if now is None or typical is None else f"{now - typical:+.0f} mph now",
        delta_color="normal",
    )
    for col, h in zip(cols[2:], current.horizons if current else (), strict=False):
        value = "n/a" if h.speed_mph is None else f"{h.speed_mph:.0f} mph"
        interval = f"withheld: {h.reason.replace('_', ' ')}" if h.reason else ""
        if h.lower_mph is not None and h.upper_mph is not None:
            interval = f"{h.coverage:.0%} interval {h.lower_mph:.0f} to {h.upper_mph:.0f} mph"
        col.metric(f"In {h.minutes} min", value, help=interval or None)
    chances = [chance_text(h.minutes, h.probabilities) for h in current.horizons] if current else []
    if any(chances):
        st.caption(" · ".join(c for c in chances if c))
    if history.model_version:
        st.caption(f"Forecasts by model {history.model_version}.")


def _incidents_near(current: OneForecast | None) -> None:
    """The active incidents the forecasts were flagged with, nearest first."""
    for flag in current.incidents if current else ():
        where = (
            "reported as affecting this sensor"
            if flag.hops is None
            else "at this sensor"
            if flag.hops == 0
            else f"{abs(flag.hops)} link{'s' if abs(flag.hops) > 1 else ''} "
            f"{'upstream' if flag.hops < 0 else 'downstream'}"
        )
        synthetic = " (SYNTHETIC)" if flag.is_synthetic else ""
        st.warning(
            f"Incident {flag.incident_id}{synthetic}: {flag.severity.lower()}, {where} "
            f"(sensor {flag.sensor_id}), since {flag.start_time:%H:%M} UTC.",
            icon=":material/warning:",
        )


@guarded
def _weather_strip() -> None:
    """The newest observation of each weather station, in one row per station."""
    weather = api().weather()
    label = f" ({SYNTHETIC_LABEL})" if weather.synthetic else ""
    st.markdown(f"**Weather{label}**")
    if not weather.observations:
        st.caption("No weather observations yet (topic weather-observations).")
        return
    for seen in weather.observations[:WEATHER_STATIONS]:
        cols = st.columns(4)
        age = "" if seen.age_minutes is None else f", {seen.age_minutes:.0f} min old"
        fake = f" {SYNTHETIC_LABEL}" if seen.is_synthetic else ""
        cols[0].metric("Station", seen.station_id, help=f"{seen.observed_at:%H:%M} UTC{age}")
        cols[0].caption(f"{seen.observed_at:%H:%M} UTC{age}{fake}")
        cols[1].metric("Precipitation", _unit(seen.precipitation_mm, "mm"))
        cols[2].metric("Visibility", _unit(seen.visibility_km, "km"))
        cols[3].metric("Temperature", _unit(seen.temperature_c, "°C"))


def _unit(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:.1f} {unit}"


def _chart(history: SensorHistory, current: OneForecast | None, horizon: int) -> None:
    observed = sensor_observed_frame(history)
    if observed["speed"].isna().all():
        st.info(
            "No readings for this sensor in this period yet. Live readings arrive once the "
            "producer runs (`make demo`); try a longer period."
        )
        return
    forecasts = sensor_forecast_frame(history, current)
    st.altair_chart(sensor_speed_chart(observed, forecasts, horizon), width="stretch")
    st.caption(
        "Solid: observed. Dotted grey: the model's typical speed for this time of week. Dashed "
        f"blue and band: forecasts made {horizon} min before each window, with their interval. "
        "Dots with bars: the current forecasts ahead. Gaps: no reading, or a forecast withheld "
        "because its sensor sent too little in the hour before (see the API's `reason`)."
    )


def _alerts(sensor_id: str) -> None:
    st.subheader("Recent alerts")
    alerts = alerts_frame(api().alerts(sensor_id=sensor_id, limit=RECENT_ALERTS))
    if alerts.empty:
        st.caption("No alerts for this sensor.")
        return
    st.dataframe(alerts.drop(columns=["alert_id", "sensor_id"]), hide_index=True)


def _neighbours(sensor: SensorInfo) -> None:
    st.subheader("Location and neighbours")
    st.caption(
        f"{sensor.latitude:.5f}, {sensor.longitude:.5f}. Upstream (feeding in): "
        f"{', '.join(sensor.upstream[:8]) or 'none'}. Downstream (traffic goes to): "
        f"{', '.join(sensor.downstream[:8]) or 'none'}."
    )
    links = [("upstream", sensor.upstream[:1]), ("downstream", sensor.downstream[:1])]
    for direction, nearest in links:
        for other in nearest:
            st.page_link(
                page("sensor"),
                label=f"Next sensor {direction}: {other}",
                query_params={"sensor": other},
            )
