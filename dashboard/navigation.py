"""The dashboard's pages by key, so views can link to each other without importing each other."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from dashboard.states import guarded


@dataclass(frozen=True)
class PageSpec:
    title: str
    icon: str
    module: str


PAGES = {
    "map": PageSpec("Live map", ":material/map:", "dashboard.views.live_map"),
    "sensor": PageSpec("Sensor detail", ":material/show_chart:", "dashboard.views.sensor_detail"),
    "network": PageSpec("Network analytics", ":material/insights:", "dashboard.views.network"),
    "alerts": PageSpec("Alerts", ":material/notifications:", "dashboard.views.alerts"),
    "model": PageSpec("Model quality", ":material/verified:", "dashboard.views.model_quality"),
    "reports": PageSpec("Reports", ":material/description:", "dashboard.views.reports"),
}
DEFAULT = "map"


def _lazy(module: str) -> Callable[[], None]:
    """Import a view only when its page is first opened (the map need not wait for reportlab),
    and run it guarded: whatever fails, the page shows a notice, never a traceback."""

    def render() -> None:
        importlib.import_module(module).render()

    render.__name__ = render.__qualname__ = module  # names the page in the dashboard's log
    return guarded(render)


def page(key: str) -> StreamlitPage:
    """The st.Page for a key; equal keys give equal pages, so links resolve across reruns."""
    spec = PAGES[key]
    return st.Page(
        _lazy(spec.module), title=spec.title, icon=spec.icon, url_path=key, default=key == DEFAULT
    )


def url_path(key: str) -> str:
    """Where a page lives in the browser: the default page is the app's root."""
    return "" if key == DEFAULT else key


def all_pages() -> list[StreamlitPage]:
    return [page(key) for key in PAGES]
