"""Traffic incidents, active and recent, from `traffic-incidents` (see serving/live/context.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from serving.routes.access import READ, allow
from serving.routes.common import known_sensor, service
from serving.schemas import IncidentList, Problem

router = APIRouter(prefix="/v1/incidents", tags=["incidents"], dependencies=allow(*READ))

STATUSES = {"active": ("active",), "recent": ("ended", "expired")}


@router.get("", response_model=IncidentList, responses={404: {"model": Problem}})
def incidents(
    request: Request,
    status: Annotated[
        list[Literal["active", "recent"]] | None,
        Query(max_length=2, description="Repeat; omit for both. recent: ended or expired."),
    ] = None,
    sensor_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            pattern=r"^[A-Za-z0-9_.:-]+$",
            description="Only incidents whose affected stretch holds this sensor.",
        ),
    ] = None,
    synthetic: Annotated[
        bool | None, Query(description="Only simulated (true) or only real (false) reports.")
    ] = None,
) -> dict:
    """Incidents active now and those ended or expired in the last `incident_recent_hours`
    (event time), the latest started first, each with its affected stretch."""
    svc = service(request)
    if sensor_id is not None:
        known_sensor(svc, sensor_id)
    wanted = frozenset(s for name in status or STATUSES for s in STATUSES[name])
    return svc.incident_listing(wanted, sensor_id, synthetic)
