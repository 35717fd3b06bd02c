"""Liveness and readiness: orchestrators restart on the first, route traffic on the second."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from traffic_core import __version__

router = APIRouter(prefix="/v1", tags=["health"])


@router.get("/health")
def health() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "ok", "version": __version__}


@router.get("/ready")
def ready(request: Request) -> JSONResponse:
    """Ready only when a registered model can answer forecasts."""
    model_dir = request.app.state.settings.model_dir
    latest = model_dir / "latest"
    if not latest.exists():
        return JSONResponse(
            status_code=503,
            content={"ready": False, "reason": f"no model registered yet (no {latest})"},
        )
    return JSONResponse(content={"ready": True, "model": latest.read_text().strip()})
