"""The whole network now and over the last hours."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from serving.routes.access import READ, allow
from serving.routes.common import service
from serving.schemas import NetworkHistory, NetworkStatus

router = APIRouter(prefix="/v1/network", tags=["network"], dependencies=allow(*READ))


@router.get("/status", response_model=NetworkStatus)
def status(request: Request) -> dict:
    """Speed and congestion class of every sensor in the newest closed window."""
    return service(request).network_status()


@router.get("/history", response_model=NetworkHistory)
def history(request: Request, hours: Annotated[float, Query(gt=0, le=48)] = 6.0) -> dict:
    """Network-average speed and congested/severe counts per window."""
    return service(request).network_history(hours)
