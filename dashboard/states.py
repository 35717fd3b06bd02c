"""What a page shows instead of data when something is missing: always a sentence saying what
to do next, never a stack trace (those go to the dashboard's log)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Literal, ParamSpec, TypeVar

import streamlit as st

from dashboard.client import (
    ApiError,
    ApiUnreachable,
    Forbidden,
    NotAuthenticated,
    NotFound,
    NotReady,
    RateLimited,
)
from dashboard.config import START_HINT, DashboardConfig
from dashboard.context import config

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

SYNTHETIC_LABEL = "SYNTHETIC"


@dataclass(frozen=True)
class Notice:
    level: Literal["error", "warning", "info"]
    text: str


def notice_for(error: Exception, config: DashboardConfig) -> Notice:
    """The planner-facing explanation of a failure."""
    if isinstance(error, ApiUnreachable):
        return Notice(
            "error",
            f"The prediction API at {config.api_url} is not reachable ({error.detail}). "
            f"{START_HINT} If it runs elsewhere, set TRAFFIC_API_URL and restart the dashboard.",
        )
    if isinstance(error, NotReady):
        return Notice(
            "warning",
            f"No forecasts yet: {error.detail}. The pipeline publishes the first model and the "
            f"live readings arrive a few minutes after `make demo`; reload this page then.",
        )
    if isinstance(error, NotAuthenticated):
        return Notice(
            "error",
            f"The API refused the dashboard's token ({error.detail}). Set "
            "TRAFFIC_DASHBOARD_TOKEN to a valid planner token and restart the dashboard.",
        )
    if isinstance(error, Forbidden):
        return Notice(
            "warning",
            f"The dashboard's token may not see this ({error.detail}). "
            "Ask an operator for a token with the needed role.",
        )
    if isinstance(error, RateLimited):
        return Notice(
            "warning", f"The API asks the dashboard to slow down ({error.detail}). Reload shortly."
        )
    if isinstance(error, NotFound):
        return Notice("warning", f"Not found: {error.detail}.")
    if isinstance(error, ApiError):
        return Notice(
            "error",
            f"The API answered unexpectedly ({error.detail}). Check the API log; the dashboard "
            "and the API may be different versions.",
        )
    return Notice(
        "error",
        f"This view could not be drawn ({type(error).__name__}: {error}). Reload the page; if "
        "it keeps happening, send this message and the dashboard log to the platform team.",
    )


def show(notice: Notice) -> None:
    getattr(st, notice.level)(notice.text)


def guarded(body: Callable[P, None]) -> Callable[P, None]:
    """Run a page, section or fragment body; a failure becomes a notice, not a traceback.

    Streamlit's own control flow (st.rerun, st.stop, st.switch_page) raises BaseException
    subclasses, which pass through untouched.
    """

    @wraps(body)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            body(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, ApiError):
                log.exception("dashboard view %s failed", body.__qualname__)
            show(notice_for(exc, config()))

    return run


def unless_not_ready(fetch: Callable[[], T]) -> tuple[T | None, str | None]:
    """The answer, or None and the API's reason while there is no model or no live state yet:
    pages then show what they can instead of nothing."""
    try:
        return fetch(), None
    except NotReady as exc:
        return None, exc.detail


def synthetic_banner(synthetic: bool) -> None:
    """Simulator data must never pass for real detector readings."""
    if synthetic:
        st.warning(
            f"**{SYNTHETIC_LABEL} DATA**: these readings come from the traffic simulator, "
            "not from real detectors.",
            icon=":material/science:",
        )
