"""The process-wide configuration and API client every page uses."""

from __future__ import annotations

import streamlit as st

from dashboard.client import TrafficApi, api_for
from dashboard.config import DashboardConfig


@st.cache_resource(show_spinner=False)
def config() -> DashboardConfig:
    """Read once per server process; restart the dashboard after changing the environment."""
    return DashboardConfig.from_env()


def api() -> TrafficApi:
    return api_for(config())
