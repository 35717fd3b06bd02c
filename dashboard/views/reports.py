"""Page 6: a CSV of the 5-minute data and a PDF summary for chosen days and sensors.

The lake is the source of record; for days it lacks (today, before the nightly aggregation)
the rows come from the API's sensor history. Lake reports work even while the API is down.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import streamlit as st

from dashboard.client import ApiError
from dashboard.context import api, config
from dashboard.lake import aggregate_files, read_aggregates
from dashboard.reports.dataset import (
    ReportData,
    ReportRequest,
    from_history,
    from_lake,
    sensor_summary,
    to_csv,
)
from dashboard.reports.pdf import build_pdf
from dashboard.states import notice_for, show, synthetic_banner, unless_not_ready

MAX_HISTORY_HOURS = 48
"""The longest history the API answers for (its live state keeps two days)."""


def render() -> None:
    st.title("Reports")
    lake_days = list(aggregate_files(config().lake_dir))
    sensor_ids = _sensor_ids(lake_days)
    if lake_days:
        st.caption(f"The lake holds 5-minute aggregates for {lake_days[0]} to {lake_days[-1]}.")
    else:
        st.caption("The lake holds no aggregates yet: reports use the API's recent history.")
    default_end = lake_days[-1] if lake_days else datetime.now(UTC).date()
    with st.form("report_form"):
        left, right = st.columns([1, 2])
        period = left.date_input(
            "Days (UTC)",
            value=(max(default_end - timedelta(days=1), _first(lake_days)), default_end),
        )
        chosen = right.multiselect("Sensors (none chosen = all)", sensor_ids, key="report_sensors")
        submitted = st.form_submit_button("Prepare report", type="primary")
    if submitted and not period:
        st.warning("Choose the first and the last day of the report.")
    elif submitted:
        start, end = period if len(period) == 2 else (period[0], period[0])
        st.session_state["report"] = _prepare(ReportRequest(start, end, tuple(chosen)))
    prepared = st.session_state.get("report")
    if prepared is not None:
        _offer(*prepared)


def _first(days: list[date]) -> date:
    return days[0] if days else date.min


def _sensor_ids(lake_days: list[date]) -> list[str]:
    """From the API; while it is down, from the newest lake day, so lake reports still work."""
    try:
        return sorted(s.sensor_id for s in api().sensors())
    except ApiError as exc:
        show(notice_for(exc, config()))
        if not lake_days:
            return []
        rows = read_aggregates(
            config().lake_dir, lake_days[-1], lake_days[-1], columns=["sensor_id"]
        )
        st.caption("Sensors listed from the lake while the API is unavailable.")
        return sorted(rows["sensor_id"].unique())


def _prepare(request: ReportRequest) -> tuple[ReportData, bytes, bytes] | None:
    with st.spinner("Collecting the data…"):
        report = from_lake(config().lake_dir, request) or _from_api(request)
    if report.rows.empty:
        st.warning(
            f"No data for {request.start} to {request.end}: the lake has no aggregates for "
            "these days and the API's recent history does not reach back that far. "
            "Choose days the lake holds (listed above)."
        )
        return None
    with st.spinner("Writing the CSV and the PDF…"):
        return report, to_csv(report), build_pdf(report)


def _from_api(request: ReportRequest) -> ReportData:
    """Each sensor's history back to the report's first day (at most two days)."""
    status, _ = unless_not_ready(api().network_status)
    newest = status.as_of if status and status.as_of else datetime.now(UTC)
    first, _ = request.window()
    hours = min(MAX_HISTORY_HOURS, max(1, math.ceil((newest - first) / timedelta(hours=1)) + 1))
    ids = request.sensor_ids or tuple(s.sensor_id for s in api().sensors())
    progress = st.progress(0.0, text="Asking the API for sensor history…")
    histories = []
    for done, sensor_id in enumerate(ids, start=1):
        histories.append(api().sensor_history(sensor_id, hours))
        progress.progress(done / len(ids), text=f"Sensor history {done}/{len(ids)}")
    progress.empty()
    return from_history(histories, request)


def _offer(report: ReportData, csv: bytes, pdf: bytes) -> None:
    req = report.request
    synthetic_banner(report.synthetic)
    sensors = report.rows["sensor_id"].nunique()
    st.success(
        f"Report ready: {len(report.rows):,} rows, {sensors} sensors, {req.start} to {req.end}, "
        f"from the {report.source_label}."
    )
    name = f"metr-la-report_{req.start}_{req.end}"
    left, right = st.columns(2)
    left.download_button(
        "Download CSV", csv, f"{name}.csv", "text/csv", key="download_csv", on_click="ignore"
    )
    right.download_button(
        "Download PDF", pdf, f"{name}.pdf", "application/pdf", key="download_pdf", on_click="ignore"
    )
    st.subheader("Slowest sensors")
    st.dataframe(sensor_summary(report.rows).head(20), hide_index=True, column_config=_PERCENT)


_PERCENT = {
    "mean_speed_mph": st.column_config.NumberColumn("Mean speed (mph)", format="%.1f"),
    "min_speed_mph": st.column_config.NumberColumn("Min speed (mph)", format="%.1f"),
    "congested_share": st.column_config.NumberColumn("Congested", format="percent"),
    "severe_share": st.column_config.NumberColumn("Severe", format="percent"),
}
