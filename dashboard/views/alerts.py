"""Page 4: the live feed of congestion alerts, filtered by sensor, kind and age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from dashboard.context import api, config
from dashboard.frames import alerts_frame
from dashboard.states import guarded, synthetic_banner, unless_not_ready

ANY = "All"
PERIODS = {
    "Last hour": timedelta(hours=1),
    "Last 6 hours": timedelta(hours=6),
    "Last 24 hours": timedelta(hours=24),
    "Last 7 days": timedelta(days=7),
    "Everything": None,
}
LIMITS = (50, 200, 1000)


def render() -> None:
    st.title("Alerts")
    st.caption(
        "An alert is raised when a forecast moves a sensor into congested or severe traffic, and "
        "cleared when it moves back. Periods count back from the newest data, which during a "
        "replay of 2012 readings is not today."
    )
    ids = sorted(s.sensor_id for s in api().sensors())
    cols = st.columns(4)
    sensor = cols[0].selectbox("Sensor", [ANY, *ids], key="alerts_sensor")
    kind = cols[1].selectbox("Kind", [ANY, "raised", "cleared"], key="alerts_kind")
    period = cols[2].selectbox("Since", list(PERIODS), index=2, key="alerts_period")
    limit = cols[3].selectbox("At most", LIMITS, index=1, key="alerts_limit")
    feed(None if sensor == ANY else sensor, None if kind == ANY else kind, period, limit)


@st.fragment(run_every=config().refresh_seconds)
@guarded
def feed(sensor_id: str | None, kind: str | None, period: str, limit: int) -> None:
    """Refreshed on its own every interval; the filters above stay as the planner set them."""
    since = _since(PERIODS[period])
    alerts = api().alerts(sensor_id=sensor_id, kind=kind, since=since, limit=limit)
    frame = alerts_frame(alerts)
    synthetic_banner(bool(frame["synthetic"].any()) if not frame.empty else False)
    raised = int((frame["kind"] == "raised").sum())
    cols = st.columns(3)
    cols[0].metric("Alerts shown", len(frame))
    cols[1].metric("Raised", raised)
    cols[2].metric("Cleared", len(frame) - raised)
    if frame.empty:
        st.info(
            "No alerts match these filters. Alerts appear once a model is published and live "
            "forecasts cross a congestion threshold; try a longer period."
        )
        return
    st.dataframe(
        frame.drop(columns=["alert_id"]),
        hide_index=True,
        column_config={
            "raised_at": st.column_config.DatetimeColumn(
                "Raised at (UTC)", format="YYYY-MM-DD HH:mm"
            ),
            "target_time": st.column_config.DatetimeColumn("For (UTC)", format="HH:mm"),
            "horizon_minutes": st.column_config.NumberColumn("Horizon (min)"),
            "forecast_speed_mph": st.column_config.NumberColumn("Forecast (mph)", format="%.0f"),
        },
    )
    st.caption(f"Refreshed {datetime.now(UTC):%H:%M:%S} UTC, every {config().refresh_seconds} s.")


def _since(period: timedelta | None) -> datetime | None:
    """Counted back from the newest closed window the API reports, else from now."""
    if period is None:
        return None
    status, _ = unless_not_ready(api().network_status)
    newest = status.as_of if status else None
    return (newest or datetime.now(UTC)) - period
