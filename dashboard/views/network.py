"""Page 3: how the whole network is doing over time, where it is worst, and its weekly rhythm."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard.charts import congested_sensors_chart, network_speed_chart, weekday_hour_heatmap
from dashboard.context import api, config
from dashboard.corridors import corridors, worst_corridors
from dashboard.frames import network_history_frame
from dashboard.lake import (
    aggregate_files,
    aggregates_dir,
    day_profile,
    synthetic_days,
    weekday_hour_matrix,
)
from dashboard.states import SYNTHETIC_LABEL, guarded, synthetic_banner, unless_not_ready

HOURS = (3, 6, 12, 24, 48)
"""The API keeps (and answers for) the last 48 hours."""
HEATMAP_VALUES = {
    "mean_speed_mph": "Mean speed (mph)",
    "congested_share": "Share of windows congested or severe",
    "severe_share": "Share of windows severe",
}


def render() -> None:
    st.title("Network analytics")
    _history()
    _corridors()
    _weekly_heatmap()


@guarded
def _history() -> None:
    hours = st.select_slider(
        "Period (hours)", HOURS, value=24, key="network_hours", format_func=str
    )
    history = api().network_history(hours)
    synthetic_banner(history.synthetic)
    frame = network_history_frame(history)
    if frame.empty:
        st.info(
            "No network history yet: it builds up as live readings arrive (`make demo` starts "
            "the producer)."
        )
        return
    st.subheader("Network-average speed")
    st.altair_chart(network_speed_chart(frame), width="stretch")
    st.subheader("Congested and severe sensors")
    st.altair_chart(congested_sensors_chart(frame), width="stretch")


@guarded
def _corridors() -> None:
    st.subheader("Worst corridors now")
    st.caption(
        "A corridor is a chain of consecutive sensors along one road (each sensor's nearest "
        "downstream neighbour, when that neighbour's nearest upstream one is the sensor). "
        "Ranked by the mean current speed of their reporting sensors."
    )
    status, not_ready = unless_not_ready(api().network_status)
    if status is None:
        st.info(f"No live readings yet ({not_ready}): corridors are ranked once data arrives.")
        return
    speeds = {s.sensor_id: s.speed_mph for s in status.sensors}
    table = worst_corridors(corridors(api().sensors()), speeds)
    if table.empty:
        st.info("No corridor has reporting sensors yet.")
        return
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "mean_speed_mph": st.column_config.NumberColumn("Mean speed (mph)", format="%.1f"),
            "slowest_speed_mph": st.column_config.NumberColumn("Slowest (mph)", format="%.1f"),
            "length_km": st.column_config.NumberColumn("Length (km)", format="%.1f"),
            "sensor_ids": st.column_config.TextColumn("Sensors (in traffic direction)"),
        },
    )


@guarded
def _weekly_heatmap() -> None:
    st.subheader("Weekly rhythm (lake)")
    lake_dir = config().lake_dir
    files = aggregate_files(lake_dir)
    if not files:
        st.info(
            f"The lake has no 5-minute aggregates yet (looked in {aggregates_dir(lake_dir)}). "
            "They appear once the pipeline has aggregated a day of readings: run `make demo`, "
            "or materialize `traffic_5min_aggregates` in Dagster. Set TRAFFIC_LAKE_DIR if the "
            "lake lives elsewhere."
        )
        return
    value = st.segmented_control(
        "Colour by",
        list(HEATMAP_VALUES),
        format_func=HEATMAP_VALUES.__getitem__,
        default="mean_speed_mph",
        key="heatmap_value",
    )
    value = value or "mean_speed_mph"
    days = list(files)
    simulated = _synthetic_days(lake_dir, tuple(days))
    synthetic_banner(bool(simulated))
    profiles = [_day_profile(path, path.stat().st_mtime_ns) for path in files.values()]
    matrix = weekday_hour_matrix(profiles)
    st.altair_chart(weekday_hour_heatmap(matrix, value, HEATMAP_VALUES[value]), width="stretch")
    st.caption(
        f"All sensors, {len(days)} days of aggregates from {days[0]} to {days[-1]} (hours UTC). "
        "Weekdays seen only once are single days, not averages."
        + (f" {SYNTHETIC_LABEL} days: {', '.join(map(str, simulated))}." if simulated else "")
    )


@st.cache_data(ttl=600, show_spinner=False)
def _synthetic_days(lake_dir: Path, days: tuple[date, ...]) -> list[date]:
    return synthetic_days(lake_dir, days)


@st.cache_data(ttl=3600, show_spinner="Reading the lake…", max_entries=2000)
def _day_profile(path: Path, mtime_ns: int) -> pd.DataFrame:
    """Per file and version: a rewritten day (late data) has a new mtime and is read again."""
    return day_profile(pd.read_parquet(path, columns=["window_start", "speed_mean", "congestion"]))
