"""Planner dashboard (`streamlit run dashboard/app.py`): live map, sensor detail, network
analytics, alerts, model quality and reports, all from the prediction API and the lake."""

from __future__ import annotations

import streamlit as st

from dashboard.client import ApiError
from dashboard.context import api, config
from dashboard.navigation import all_pages


def api_status() -> None:
    """A line in the sidebar on every page: is the API up, and is a model serving?"""
    try:
        readiness = api().readiness()
    except ApiError:  # the page itself says what to do
        st.sidebar.error(f"API unreachable at {config().api_url}")
        return
    if readiness.ready:
        st.sidebar.success(f"API ready · model {readiness.model or 'unknown'}")
    else:
        st.sidebar.warning(f"API up, not ready: {readiness.reason}")


st.set_page_config(page_title="LA traffic forecasts", page_icon="🚦", layout="wide")
current = st.navigation(all_pages())
api_status()
st.sidebar.caption(f"API {config().api_url} · refresh every {config().refresh_seconds} s")
current.run()
