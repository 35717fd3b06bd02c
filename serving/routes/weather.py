"""The latest weather observation per station, from `weather-observations`.

A route of its own rather than a field of the sensor routes: observations come per station,
and stations are not tied to sensors (the contract carries no station location; the features
take the network-wide weather), so one answer serves every sensor page.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from serving.routes.access import READ, allow
from serving.routes.common import service
from serving.schemas import WeatherNow

router = APIRouter(prefix="/v1/weather", tags=["weather"], dependencies=allow(*READ))


@router.get("", response_model=WeatherNow)
def weather(
    request: Request,
    station_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> dict:
    """Each station's newest observation with its age at the service's event time."""
    return service(request).weather_now(station_id)
