"""Planner dashboard (`streamlit run dashboard/app.py`): the platform's status at a glance."""

from __future__ import annotations

import os

import httpx
import streamlit as st

API_URL = os.environ.get("TRAFFIC_API_URL", "http://127.0.0.1:8000")

st.set_page_config(page_title="LA traffic forecasts", layout="wide")
st.title("Los Angeles highway traffic forecasts")

try:
    health = httpx.get(f"{API_URL}/v1/health", timeout=2).json()
    ready = httpx.get(f"{API_URL}/v1/ready", timeout=2).json()
except httpx.HTTPError:
    st.error(f"The prediction API at {API_URL} is not reachable. Start the platform: `make demo`.")
else:
    st.success(f"Prediction API {health['version']} is up at {API_URL}.")
    if not ready.get("ready"):
        st.warning(f"No forecasts yet: {ready.get('reason')}.")
