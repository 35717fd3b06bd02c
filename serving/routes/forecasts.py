"""Forecasts: one sensor, many or all, or from the caller's own readings."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from serving.forecasting import ReadingsError, forecast_from_readings
from serving.routes.access import FORECAST_OWN_DATA, READ, allow
from serving.routes.common import SensorPath, json_bytes, known_sensor, service
from serving.schemas import ForecastBatch, OneForecast, Problem, ReadingsRequest
from serving.service import NotReady

router = APIRouter(prefix="/v1/forecasts", tags=["forecasts"])
NOT_READY = {503: {"model": Problem, "description": "No model or no live data yet."}}
UNKNOWN = {404: {"model": Problem, "description": "Unknown sensor."}}


@router.get(
    "/{sensor_id}",
    response_model=OneForecast,
    dependencies=allow(*READ),
    responses={**NOT_READY, **UNKNOWN},
)
async def one_sensor(sensor_id: SensorPath, request: Request) -> Response:
    """15, 30 and 60 minute forecasts with 90% intervals and congestion classes."""
    svc = service(request)
    known_sensor(svc, sensor_id)
    snapshot = svc.snapshot()
    if sensor_id not in snapshot:
        raise NotReady(f"model {snapshot.model_version} was not trained for sensor {sensor_id}")
    return json_bytes(snapshot.one_json(sensor_id))


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
