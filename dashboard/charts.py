"""Altair charts of the pages; times are drawn in UTC, as the API and the lake store them."""

from __future__ import annotations

import altair as alt
import pandas as pd

from dashboard.congestion import hex_colour
from dashboard.lake import WEEKDAYS

CLOCK = "%H:%M"
DAY_CLOCK = "%a %H:%M"


def time_axis(label_format: str = CLOCK) -> alt.X:
    """24-hour UTC labels; Vega would otherwise use the browser's zone and a 12-hour clock."""
    return alt.X(
        "window_start:T",
        title="Time (UTC)",
        scale=alt.Scale(type="utc"),
        axis=alt.Axis(format=label_format, labelOverlap=True),
    )


TIME = time_axis()


def time_tooltip(label_format: str = "%Y-%m-%d %H:%M", title: str = "time (UTC)") -> alt.Tooltip:
    """A UTC time unit makes the tooltip format in UTC too, like the axis."""
    return alt.Tooltip(
        "window_start:T", timeUnit="utcyearmonthdatehoursminutes", format=label_format, title=title
    )


SPEED = alt.Y("speed:Q", title="Speed (mph)", scale=alt.Scale(zero=False))
GAPS = "break-paths-show-domains"
"""Lines and bands stop at a missing value (a withheld forecast, a window without a reading)
instead of joining its neighbours, or dropping to zero."""


def sensor_speed_chart(observed: pd.DataFrame, forecasts: pd.DataFrame, horizon: int) -> alt.Chart:
    """Observed and typical speed, the forecasts made `horizon` minutes earlier with their
    interval band, and the current forecasts ahead as points with error bars."""
    series = alt.Color(
        "series:N",
        title=None,
        scale=alt.Scale(
            domain=["Observed", "Typical", f"Forecast ({horizon} min ahead)"],
            range=["#1f2937", "#9ca3af", "#2563eb"],
        ),
        legend=alt.Legend(orient="top"),
    )
    past = forecasts[(forecasts["horizon"] == horizon) & ~forecasts["ahead"]].assign(
        series=f"Forecast ({horizon} min ahead)", speed=lambda f: f["forecast"]
    )
    ahead = forecasts[forecasts["ahead"]].assign(
        series=f"Forecast ({horizon} min ahead)", speed=lambda f: f["forecast"]
    )
    band = (
        alt.Chart(past)
        .mark_area(opacity=0.2, color="#2563eb", invalid=GAPS)
        .encode(TIME, alt.Y("lower:Q", title="Speed (mph)"), alt.Y2("upper:Q"))
    )
    forecast_line = (
        alt.Chart(past).mark_line(strokeDash=[5, 3], invalid=GAPS).encode(TIME, SPEED, series)
    )
    observed_lines = (
        alt.Chart(observed)
        .mark_line(invalid=GAPS)
        .encode(
            TIME,
            SPEED,
            series,
            strokeDash=alt.condition(
                alt.datum.series == "Typical", alt.value([2, 2]), alt.value([1, 0])
            ),
            tooltip=[time_tooltip(CLOCK), "series:N", "speed:Q"],
        )
    )
    ahead_bars = (
        alt.Chart(ahead)
        .mark_rule(color="#2563eb")
        .encode(TIME, alt.Y("lower:Q"), alt.Y2("upper:Q"))
    )
    ahead_points = (
        alt.Chart(ahead)
        .mark_point(filled=True, size=60, color="#2563eb")
        .encode(
            TIME,
            SPEED,
            tooltip=[
                time_tooltip(CLOCK, "for (UTC)"),
                alt.Tooltip("horizon:Q", title="minutes ahead"),
                alt.Tooltip("forecast:Q", format=".1f"),
                alt.Tooltip("lower:Q", format=".1f"),
                alt.Tooltip("upper:Q", format=".1f"),
            ],
        )
    )
    return alt.layer(band, forecast_line, observed_lines, ahead_bars, ahead_points).properties(
        height=360, title="Observed speed vs forecasts"
    )


def network_speed_chart(history: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(history)
        .mark_line(color="#1f2937")
        .encode(
            time_axis(DAY_CLOCK),
            alt.Y(
                "average_speed_mph:Q", title="Network average (mph)", scale=alt.Scale(zero=False)
            ),
            tooltip=[
                time_tooltip(),
                alt.Tooltip("average_speed_mph:Q", format=".1f"),
                "sensors_reporting:Q",
            ],
        )
        .properties(height=280)
    )


def congested_sensors_chart(history: pd.DataFrame) -> alt.Chart:
    counts = history.melt(
        id_vars=["window_start"],
        value_vars=["congested", "severe"],
        var_name="class",
        value_name="sensors",
    )
    return (
        alt.Chart(counts)
        .mark_area(opacity=0.75)
        .encode(
            time_axis(DAY_CLOCK),
            alt.Y("sensors:Q", title="Sensors", stack=True),
            alt.Color(
                "class:N",
                title=None,
                scale=alt.Scale(
                    domain=["congested", "severe"],
                    range=[hex_colour("congested"), hex_colour("severe")],
                ),
                legend=alt.Legend(orient="top"),
            ),
            tooltip=[
                time_tooltip(),
                "class:N",
                "sensors:Q",
            ],
        )
        .properties(height=280)
    )


def weekday_hour_heatmap(matrix: pd.DataFrame, value: str, title: str) -> alt.Chart:
    """Weekday rows x hour columns; slower (or more congested) is redder."""
    higher_is_worse = value != "mean_speed_mph"
    return (
        alt.Chart(matrix)
        .mark_rect()
        .encode(
            alt.X("hour:O", title="Hour of day"),
            alt.Y("day:O", title=None, sort=list(WEEKDAYS)),
            alt.Color(
                f"{value}:Q",
                title=title,
                scale=alt.Scale(scheme="redyellowgreen", reverse=higher_is_worse),
            ),
            tooltip=["day:O", "hour:O", alt.Tooltip(f"{value}:Q", title=title)],
        )
        .properties(height=260)
    )
