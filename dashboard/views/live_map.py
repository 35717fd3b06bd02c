"""Page 1: every sensor on the map, coloured by its congestion now or forecast ahead."""

from __future__ import annotations

import streamlit as st

from dashboard.client import ApiError
from dashboard.congestion import CLASSES, LABELS, hex_colour
from dashboard.context import api, config
from dashboard.frames import live_sensor_frame
from dashboard.map_layers import NOW, network_deck
from dashboard.navigation import page
from dashboard.sensor_map import MAP_HEIGHT_PX, sensor_map
from dashboard.states import guarded, synthetic_banner, unless_not_ready
from serving.schemas import ForecastBatch, IncidentOut, NetworkStatus

VIEWS = {NOW: "Now", 15: "In 15 min", 30: "In 30 min", 60: "In 60 min"}


def render() -> None:
    st.title("Live network map")
    left, right = st.columns([3, 1])
    minutes = left.segmented_control(
        "Colour sensors by",
        options=list(VIEWS),
        format_func=VIEWS.__getitem__,
        default=NOW,
        key="map_view",
        help="Fill: congestion now or forecast that far ahead. Ring: congestion now.",
    )
    heat = right.toggle(
        "Heat layer (slow traffic)",
        value=False,
        key="map_heat",
        help="Where traffic is slowest. Off at first: without graphics acceleration it takes "
        "seconds to draw.",
    )
    _legend()
    live_map(NOW if minutes is None else minutes, heat)


@st.fragment(run_every=config().refresh_seconds)
@guarded
def live_map(minutes: int, heat: bool) -> None:
    """Redrawn every refresh interval without rerunning the rest of the page."""
    sensors = api().sensors()
    if not sensors:
        st.info("The API knows no sensors yet: the sensor graph is loaded with the first model.")
        return
    status, no_status = unless_not_ready(api().network_status)
    batch, no_forecasts = unless_not_ready(api().forecasts)
    synthetic_banner(bool((status and status.synthetic) or (batch and batch.synthetic)))
    if no_status or (status and status.as_of is None):
        st.warning(
            f"No live readings yet{f' ({no_status})' if no_status else ''}: sensors are grey "
            "until the producer's readings arrive (`make demo` starts it)."
        )
    if no_forecasts:
        st.warning(f"No forecasts yet ({no_forecasts}): colours show current congestion only.")
    incidents = _active_incidents()
    if incidents and any(i.is_synthetic for i in incidents):
        synthetic_banner(True)
    frame = live_sensor_frame(sensors, status, batch)
    _figures(len(frame), status, batch)
    _incident_caption(incidents)
    if batch is None and minutes != NOW:
        minutes = NOW
    if heat or config().tiles:
        event = st.pydeck_chart(
            network_deck(frame, minutes, config().tiles, heat, incidents or ()),
            height=MAP_HEIGHT_PX,
            on_select="rerun",
            selection_mode="single-object",
            key="network_map",
        )
        picked = event.selection.objects.get("sensors") if event else None
        sensor_id = picked[0]["sensor_id"] if picked else None
    else:
        sensor_id = sensor_map(
            frame, sensors, minutes, key="network_svg", incidents=incidents or ()
        )
    if sensor_id:
        st.page_link(
            page("sensor"),
            label=f"Open sensor {sensor_id}",
            icon=":material/show_chart:",
            query_params={"sensor": sensor_id},
        )
    else:
        st.caption("Hover a sensor for its speeds; click one to open its detail page.")


def _active_incidents() -> list[IncidentOut] | None:
    """The incidents active now; None (said on the page) when the API cannot tell."""
    try:
        return api().incidents(["active"]).incidents
    except ApiError as error:
        st.caption(f"Incidents unavailable: {error.detail}")
        return None


def _incident_caption(incidents: list[IncidentOut] | None) -> None:
    if not incidents:
        if incidents is not None:
            st.caption("No active incidents.")
        return
    synthetic = " (SYNTHETIC)" if any(i.is_synthetic for i in incidents) else ""
    st.caption(
        f"{len(incidents)} active incident{'s' if len(incidents) > 1 else ''}{synthetic}: red "
        "triangles, with the stretch each one affects in red. Hover a triangle for details."
    )


def _figures(sensor_count: int, status: NetworkStatus | None, batch: ForecastBatch | None) -> None:
    cols = st.columns(6)
    cols[0].metric("Sensors on map", sensor_count)
    if status is not None:
        cols[1].metric("Reporting", status.sensors_reporting)
        avg = status.average_speed_mph
        cols[2].metric("Network average", "n/a" if avg is None else f"{avg:.1f} mph")
        cols[3].metric("Congested", status.counts.get("congested", 0))
        cols[4].metric("Severe", status.counts.get("severe", 0))
        as_of = status.as_of
        cols[5].metric(
            "As of (UTC)",
            "n/a" if as_of is None else f"{as_of:%H:%M}",
            help=None
            if as_of is None
            else f"Newest closed 5-minute window: {as_of:%Y-%m-%d %H:%M}",
        )
    if status is not None and status.as_of is not None:
        st.caption(f"Data as of {status.as_of:%A %d %B %Y, %H:%M} UTC.")
    if batch is not None:
        st.caption(
            f"Forecasts by model {batch.model_version}, made at {batch.issued_for:%H:%M} UTC."
        )


def _legend() -> None:
    swatches = " &nbsp; ".join(
        f'<span style="color:{hex_colour(c)}">&#9679;</span> {LABELS[c]}' for c in CLASSES
    )
    st.markdown(swatches, unsafe_allow_html=True)
