"""Forecasts: one sensor, many or all, or from the caller's own readings."""

from __future__ import annotations

from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.requests import HTTPConnection
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.forecasting import ReadingsError, forecast_from_readings
from serving.problems import problem
from serving.route_table import api_routes
from serving.routes.access import FORECAST_OWN_DATA, READ, allow
from serving.routes.common import (
    VALID_SENSOR_ID,
    SensorPath,
    json_bytes,
    known_sensor,
    service,
)
from serving.schemas import ForecastBatch, OneForecast, Problem, ReadingsRequest
from serving.security import admit
from serving.service import ForecastService, NotReady

PREFIX = "/v1/forecasts/"
READ_ROLES = frozenset(READ)
router = APIRouter(prefix=PREFIX.rstrip("/"), tags=["forecasts"])
# Typed as FastAPI's `responses` parameter, so the two can be merged into it.
OpenApiResponses = dict[int | str, dict[str, Any]]
NOT_READY: OpenApiResponses = {
    503: {"model": Problem, "description": "No model or no live data yet."}
}
UNKNOWN: OpenApiResponses = {404: {"model": Problem, "description": "Unknown sensor."}}


@router.get(
    "/{sensor_id}",
    response_model=OneForecast,
    dependencies=allow(*READ),
    responses={**NOT_READY, **UNKNOWN},
)
async def one_sensor(sensor_id: SensorPath, request: Request) -> Response:
    """15, 30 and 60 minute forecasts with 90% intervals and congestion classes."""
    return json_bytes(one_sensor_json(service(request), sensor_id))


def one_sensor_json(svc: ForecastService, sensor_id: str) -> bytes:
    known_sensor(svc, sensor_id)
    snapshot = svc.snapshot()
    if sensor_id not in snapshot:
        raise NotReady(f"model {snapshot.model_version} was not trained for sensor {sensor_id}")
    return snapshot.one_json(sensor_id)


class OneSensorFastPath:
    """Pure ASGI answer to `GET /v1/forecasts/{sensor_id}`, the API's hottest read.

    FastAPI's per-request parameter and dependency solving cost this read about twice what
    everything else in the process does. This layer (innermost of the app's middleware, so
    request ids, audit, metrics and CORS see it like any route) answers a valid request for
    a forecast that exists with the route's own code: the same body, admission by `admit`
    with the route's roles, admission errors as the same problem responses. Anything else (bad
    id, unknown sensor, not ready, other methods) goes on to the route, which answers it as
    documented.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: Any | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "GET" or not path.startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        sensor_id = path[len(PREFIX) :]
        svc: ForecastService | None = getattr(scope["app"].state, "service", None)
        if svc is None or VALID_SENSOR_ID.fullmatch(sensor_id) is None:
            await self.app(scope, receive, send)
            return
        try:
            body = one_sensor_json(svc, sensor_id)
        except (HTTPException, NotReady):
            await self.app(scope, receive, send)
            return
        if route := self._route or self._find_route(scope["app"]):
            scope["route"] = route
        scope["path_params"] = {"sensor_id": sensor_id}
        conn = HTTPConnection(scope)
        response: Response
        try:
            admit(conn, READ_ROLES)
        except HTTPException as error:
            response = problem(conn, error.status_code, error.detail, error.headers)
        else:
            response = json_bytes(body)
        await response(scope, receive, send)

    def _find_route(self, app: FastAPI) -> Any | None:
        """The route's object, for the metrics' route label."""
        routes = (r for r in api_routes(app) if r.endpoint is one_sensor)
        self._route = next(routes, None)
        return self._route


@router.get(
    "",
    response_model=ForecastBatch,
    dependencies=allow(*READ),
    responses={**NOT_READY, **UNKNOWN},
)
async def many_sensors(
    request: Request,
    sensor_id: Annotated[
        list[str] | None, Query(max_length=1000, description="Repeat; omit for all sensors.")
    ] = None,
) -> Response:
    """Forecasts of the listed sensors, or of every sensor, made at the newest window."""
    snapshot = service(request).snapshot()
    if not sensor_id:
        return json_bytes(snapshot.batch_json(None))
    unknown = sorted({s for s in sensor_id if s not in snapshot})
    if unknown:
        raise HTTPException(404, f"unknown sensors {unknown[:20]}; GET /v1/sensors lists them")
    return json_bytes(snapshot.batch_json(list(dict.fromkeys(sensor_id))))


@router.post(
    "",
    response_model=ForecastBatch,
    dependencies=allow(*FORECAST_OWN_DATA),
    responses={**NOT_READY, **UNKNOWN},
)
def from_readings(body: ReadingsRequest, request: Request) -> Response:
    """Forecasts from readings the caller supplies (the hour up to `at` at least), for the
    sensors those readings name, by the model currently served."""
    svc = service(request)
    bundle = svc.holder.current
    if bundle is None:
        raise NotReady(svc.holder.reason() or "no model")
    frame = pd.DataFrame([r.model_dump() for r in body.readings])
    unknown = sorted(set(frame["sensor_id"]) - set(bundle.context.sensor_ids))
    if unknown:
        raise HTTPException(404, f"unknown sensors {unknown[:20]}; GET /v1/sensors lists them")
    try:
        snapshot = forecast_from_readings(bundle, frame, body.at, svc.thresholds)
    except ReadingsError as error:
        raise HTTPException(422, str(error)) from None
    return json_bytes(snapshot.batch_json(list(dict.fromkeys(frame["sensor_id"]))))
