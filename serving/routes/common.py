"""What several routes share: the service, JSON bodies already encoded, sensor lookups."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import HTTPException, Path
from fastapi.requests import HTTPConnection
from fastapi.responses import Response

from serving.service import ForecastService

SensorPath = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", description="Sensor id")
]
VALID_SENSOR_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
"""What `SensorPath` admits, for code answering without FastAPI's parameter validation."""


def service(connection: HTTPConnection) -> ForecastService:
    """The app's forecast service, for an HTTP request or a WebSocket alike."""
    return connection.app.state.service


def json_bytes(body: bytes) -> Response:
    """A body encoded ahead of the request (forecasts are encoded when their window closes)."""
    return Response(content=body, media_type="application/json")


def known_sensor(svc: ForecastService, sensor_id: str) -> str:
    try:
        svc.graph.index_of(sensor_id)
    except KeyError:
        raise HTTPException(
            404, f"unknown sensor {sensor_id!r}; GET /v1/sensors lists them"
        ) from None
    return sensor_id
