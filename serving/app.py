"""The prediction API application (`uvicorn serving.app:app`)."""

from __future__ import annotations

from fastapi import FastAPI

from serving.routes import health
from serving.settings import ApiSettings
from traffic_core import __version__


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    app = FastAPI(title="METR-LA traffic forecasts", version=__version__)
    app.state.settings = settings or ApiSettings()
    app.include_router(health.router)
    return app


app = create_app()
