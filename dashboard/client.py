"""The dashboard's only way to the prediction API: typed results, short timeouts, short caches.

Every failure becomes an `ApiError` subclass named after what the planner should do about it, so
pages never see httpx or pydantic exceptions. Answers are cached as JSON for a few seconds (live
data) or minutes (sensors, models): many browser tabs rerunning pages cost the API one call each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import streamlit as st
from pydantic import TypeAdapter, ValidationError

from dashboard.config import DashboardConfig
from serving.schemas import (
    AlertList,
    ForecastBatch,
    IncidentList,
    Lineage,
    ModelList,
    ModelSummary,
    NetworkHistory,
    NetworkStatus,
    OneForecast,
    SensorHistory,
    SensorInfo,
    WeatherNow,
)

T = TypeVar("T")
Params = tuple[tuple[str, str], ...]

TIMEOUT = httpx.Timeout(8.0, connect=2.0)
LIVE_TTL_SECONDS = 10
STATIC_TTL_SECONDS = 300


class ApiError(Exception):
    """The API could not give an answer; `detail` is its own explanation when it sent one."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


class ApiUnreachable(ApiError):
    """No HTTP answer at all: the API is not running, or not at the configured address."""


class NotAuthenticated(ApiError):
    """401: the dashboard's token is missing, expired or unknown."""


class Forbidden(ApiError):
    """403: the token's role may not call this endpoint."""


class NotFound(ApiError):
    """404: e.g. an unknown sensor or model version."""


class RateLimited(ApiError):
    """429: too many calls; waiting a little helps."""


class NotReady(ApiError):
    """503: no model published yet, or no live readings yet."""


class UnexpectedAnswer(ApiError):
    """Any other failure, including an answer that does not match the API contract."""


_ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    401: NotAuthenticated,
    403: Forbidden,
    404: NotFound,
    429: RateLimited,
    503: NotReady,
}


def error_for(status: int, body: Any) -> ApiError:
    """The error for an HTTP status and its JSON body ({"detail": ...} or the 503 of /ready)."""
    detail: Any = None
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("reason")
    if isinstance(detail, list):  # FastAPI's validation errors: one entry per bad field
        detail = "; ".join(str(item.get("msg", item)) for item in detail if item)
    text = str(detail) if detail else f"HTTP {status}"
    return _ERRORS_BY_STATUS.get(status, UnexpectedAnswer)(text, status)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str | None
    model: str | None


class TrafficApi:
    """Typed calls to /v1; `cache=False` (unit tests) always asks the API."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        audit_token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        cache: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.audit_token = audit_token
        self._http = httpx.Client(base_url=self.base_url, timeout=TIMEOUT, transport=transport)
        self._cache = cache

    @classmethod
    def from_config(cls, config: DashboardConfig) -> TrafficApi:
        return cls(config.api_url, config.token, audit_token=config.audit_token)

    def get_json(self, path: str, params: Params = (), token: str | None = None) -> Any:
        """One uncached GET; raises the ApiError that says what went wrong."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = self._http.get(path, params=list(params), headers=headers)
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"{type(exc).__name__}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            raise error_for(response.status_code, body)
        if body is None:
            raise UnexpectedAnswer(f"{path} did not answer JSON", response.status_code)
        return body

    def _get(
        self,
        path: str,
        schema: type[T] | TypeAdapter[T],
        params: Params = (),
        *,
        live: bool = True,
        token: str | None = None,
    ) -> T:
        token = token or self.token
        if self._cache:
            fetch = _cached_live if live else _cached_static
            body = fetch(self, (self.base_url, token), path, params)
        else:
            body = self.get_json(path, params, token)
        adapter = schema if isinstance(schema, TypeAdapter) else TypeAdapter(schema)
        try:
            return adapter.validate_python(body)
        except ValidationError as exc:
            raise UnexpectedAnswer(f"{path} answered outside the API contract: {exc}") from None

    def readiness(self) -> Readiness:
        """/v1/ready answers 503 with a reason while it is not ready: that is data, not an error."""
        try:
            body = self.get_json("/v1/ready", token=self.token)
        except NotReady as exc:
            return Readiness(False, exc.detail, None)
        return Readiness(bool(body.get("ready")), body.get("reason"), body.get("model"))

    def sensors(self) -> list[SensorInfo]:
        return self._get("/v1/sensors", _SENSOR_LIST, live=False)

    def sensor(self, sensor_id: str) -> SensorInfo:
        return self._get(f"/v1/sensors/{_segment(sensor_id)}", SensorInfo, live=False)

    def sensor_history(self, sensor_id: str, hours: int) -> SensorHistory:
        return self._get(
            f"/v1/sensors/{_segment(sensor_id)}/history", SensorHistory, (("hours", str(hours)),)
        )

    def forecast(self, sensor_id: str) -> OneForecast:
        return self._get(f"/v1/forecasts/{_segment(sensor_id)}", OneForecast)

    def forecasts(self, sensor_ids: Sequence[str] = ()) -> ForecastBatch:
        return self._get(
            "/v1/forecasts", ForecastBatch, tuple(("sensor_id", s) for s in sensor_ids)
        )

    def network_status(self) -> NetworkStatus:
        return self._get("/v1/network/status", NetworkStatus)

    def network_history(self, hours: int) -> NetworkHistory:
        return self._get("/v1/network/history", NetworkHistory, (("hours", str(hours)),))

    def alerts(
        self,
        sensor_id: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        limit: int = 200,
    ) -> AlertList:
        params = {"sensor_id": sensor_id, "kind": kind, "limit": str(limit)}
        if since is not None:
            params["since"] = since.isoformat()
        return self._get(
            "/v1/alerts", AlertList, tuple((k, v) for k, v in params.items() if v is not None)
        )

    def incidents(self, statuses: Sequence[str] = ()) -> IncidentList:
        """Incidents of those statuses ('active', 'recent'; none: both)."""
        return self._get("/v1/incidents", IncidentList, tuple(("status", s) for s in statuses))

    def weather(self) -> WeatherNow:
        return self._get("/v1/weather", WeatherNow)

    def models(self) -> ModelList:
        return self._get("/v1/models", ModelList, live=False)

    def current_model(self) -> ModelSummary:
        return self._get("/v1/models/current", ModelSummary, live=False)

    def lineage(self, version: str) -> Lineage:
        """Auditor/operator only: sent with the audit token when one is configured."""
        return self._get(
            f"/v1/models/{_segment(version)}/lineage",
            Lineage,
            live=False,
            token=self.audit_token or self.token,
        )


def _segment(value: str) -> str:
    """A path segment, quoted so an odd id cannot change the route."""
    return quote(value, safe="")


_SENSOR_LIST: TypeAdapter[list[SensorInfo]] = TypeAdapter(list[SensorInfo])


@st.cache_data(ttl=LIVE_TTL_SECONDS, show_spinner=False, max_entries=512)
def _cached_live(_api: TrafficApi, key: tuple[str, str | None], path: str, params: Params) -> Any:
    """Live data (forecasts, status, alerts): keyed by (API, token, path, params)."""
    return _api.get_json(path, params, key[1])


@st.cache_data(ttl=STATIC_TTL_SECONDS, show_spinner=False, max_entries=512)
def _cached_static(_api: TrafficApi, key: tuple[str, str | None], path: str, params: Params) -> Any:
    """Data that changes with a new model or network at most: sensors, models, lineage."""
    return _api.get_json(path, params, key[1])


@st.cache_resource(show_spinner=False)
def api_for(config: DashboardConfig) -> TrafficApi:
    """One client (and connection pool) per configuration for the whole server process."""
    return TrafficApi.from_config(config)
