"""The prediction API application (`uvicorn serving.app:app`)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from serving.body_guard import BodyGuard
from serving.model_runtime import ModelHolder
from serving.problems import install_problem_handlers
from serving.prometheus import AuditCollector, RequestMetrics, ServiceCollector
from serving.publisher_election import PublisherElection
from serving.request_logging import configure_logging, flush_logs
from serving.routes import (
    alerts,
    forecasts,
    health,
    incidents,
    models,
    network,
    sensors,
    streams,
    weather,
)
from serving.security import SecuritySettings, install_security
from serving.service import ForecastService
from serving.settings import ApiSettings
from serving.streams import Broadcaster, KafkaPublisher
from traffic_core import __version__
from traffic_core.networks import load_network_graph
from traffic_core.registry import ModelRegistry

ROUTERS = (health, forecasts, sensors, network, alerts, incidents, weather, models, streams)


def build_service(settings: ApiSettings) -> ForecastService:
    publisher = (
        KafkaPublisher(
            settings.kafka_bootstrap_servers,
            settings.predictions_topic,
            settings.alerts_topic,
            PublisherElection(
                settings.kafka_bootstrap_servers,
                settings.publisher_election_topic(),
                settings.publisher_group(),
            ),
        )
        if settings.live and settings.publish
        else None
    )
    return ForecastService(
        settings,
        load_network_graph(settings.dataset, settings.data_dir),
        ModelHolder(ModelRegistry(settings.model_dir), settings.model_poll_seconds),
        Broadcaster(),
        publisher,
    )


def create_app(
    settings: ApiSettings | None = None, security: SecuritySettings | None = None
) -> FastAPI:
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The log and audit writers, the live consumer and the model poll hold the GIL in
        # bursts; at CPython's default 5 ms a request arriving during one waits up to that.
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
        svc = build_service(settings)
        app.state.service = svc
        app.state.metrics.register(ServiceCollector(svc))
        svc.broadcaster.bind(asyncio.get_running_loop())
        await asyncio.to_thread(svc.start)
        try:
            yield
        finally:
            await asyncio.to_thread(svc.stop)
            flush_logs()

    app = FastAPI(
        title="METR-LA traffic forecasts",
        version=__version__,
        description="15/30/60-minute speed forecasts for Los Angeles highway sensors, with "
        "intervals, congestion levels, alerts and model lineage.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = CollectorRegistry()
    for module in ROUTERS:
        app.include_router(module.router)

    app.add_middleware(forecasts.OneSensorFastPath)  # innermost: inside CORS, audit, metrics
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes)
    install_security(app, security or SecuritySettings())
    install_problem_handlers(app)  # after security: its OpenAPI refusals become problems too
    if app.state.audit_writer is not None:
        app.state.metrics.register(AuditCollector(app.state.audit_writer))
    app.add_middleware(RequestMetrics, registry=app.state.metrics)
    return app


def __getattr__(name: str) -> FastAPI:
    """`serving.app:app` for uvicorn, built on first access so importing stays side-effect free."""
    if name == "app":
        settings = ApiSettings()
        configure_logging(settings.log_level)
        globals()["app"] = create_app(settings)
        return globals()["app"]
    raise AttributeError(name)
