"""Sensor list, metadata and recent history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from serving.routes.access import READ, allow
from serving.routes.common import SensorPath, known_sensor, service
from serving.schemas import Problem, SensorHistory, SensorInfo

router = APIRouter(prefix="/v1/sensors", tags=["sensors"], dependencies=allow(*READ))


def _info(request: Request, sensor_id: str) -> dict:
    graph = service(request).graph
    row = graph.locations.iloc[graph.index_of(sensor_id)]
    return {
        "sensor_id": sensor_id,
        "latitude": float(row["latitude"]),
        "longitude": float(row["longitude"]),
        "upstream": graph.upstream(sensor_id),
        "downstream": graph.downstream(sensor_id),
    }


@router.get("", response_model=list[SensorInfo])
def sensors(request: Request) -> list[dict]:
    """Every sensor with its location and road-graph neighbours (strongest link first)."""
    cache = request.app.state.__dict__.setdefault("sensor_infos", None)
    if cache is None:
        cache = [_info(request, s) for s in service(request).graph.sensor_ids]
        request.app.state.sensor_infos = cache
    return cache


@router.get("/{sensor_id}", response_model=SensorInfo, responses={404: {"model": Problem}})
def sensor(sensor_id: SensorPath, request: Request) -> dict:
    return _info(request, known_sensor(service(request), sensor_id))


@router.get(
    "/{sensor_id}/history", response_model=SensorHistory, responses={404: {"model": Problem}}
)
def history(
    sensor_id: SensorPath,
    request: Request,
    hours: Annotated[float, Query(gt=0, le=48, description="How far back.")] = 3.0,
) -> dict:
    """Observed speed per window with the forecasts made for it earlier and the typical speed
    for that time of week."""
    svc = service(request)
    return svc.sensor_history(known_sensor(svc, sensor_id), hours)
