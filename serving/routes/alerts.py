"""Recent congestion alerts (the live feed is on the streams)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from serving.routes.access import READ, allow
from serving.routes.common import service
from serving.schemas import AlertList

router = APIRouter(prefix="/v1/alerts", tags=["alerts"], dependencies=allow(*READ))


@router.get("", response_model=AlertList)
def alerts(
    request: Request,
    sensor_id: Annotated[str | None, Query(max_length=64)] = None,
    kind: Literal["raised", "cleared"] | None = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
) -> dict:
    """Newest first. `since` without a zone is taken as UTC."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return {"alerts": service(request).alerts.query(sensor_id, kind, since, limit)}
