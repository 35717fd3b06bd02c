"""Liveness, readiness and Prometheus metrics: open to orchestrators and scrapers."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.routes.common import service
from traffic_core import __version__

router = APIRouter(tags=["health"])


@router.get("/v1/health")
def health() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "ok", "version": __version__}


@router.get("/v1/ready")
def ready(request: Request) -> JSONResponse:
    """Ready only when a model is loaded and the live state is rebuilt and has data."""
    svc = service(request)
    reason = svc.reason()
    bundle = svc.holder.current
    body = {"ready": reason is None, "model": bundle.version if bundle else None}
    if reason is not None:
        return JSONResponse(status_code=503, content={**body, "reason": reason})
    return JSONResponse(content=body)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
