"""API settings from the environment (the same names docker-compose sets)."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from traffic_core.kafka.topics import (
    TRAFFIC_ALERTS,
    TRAFFIC_EVENTS,
    TRAFFIC_INCIDENTS,
    TRAFFIC_PREDICTIONS,
    WEATHER_OBSERVATIONS,
)
from traffic_core.settings import KafkaSettings, PlatformSettings


def _platform() -> PlatformSettings:
    return PlatformSettings()


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAFFIC_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    model_dir: Path = Field(default_factory=lambda: _platform().model_dir)
    data_dir: Path = Field(default_factory=lambda: _platform().data_dir)
    dataset: str = Field(default_factory=lambda: _platform().dataset)
    kafka_bootstrap_servers: str = Field(default_factory=lambda: KafkaSettings().bootstrap_servers)
    events_topic: str = TRAFFIC_EVENTS
    predictions_topic: str = TRAFFIC_PREDICTIONS
    alerts_topic: str = TRAFFIC_ALERTS
    incidents_topic: str = TRAFFIC_INCIDENTS
    weather_topic: str = WEATHER_OBSERVATIONS
    live: bool = Field(default=True, description="Consume traffic-events for live forecasts.")
    context: bool = Field(
        default=True, description="Consume incidents and weather (with `live` only)."
    )
    incident_hops: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Road-graph links within which an incident flags a sensor's forecasts.",
    )
    incident_open_hours: float = Field(
        default=6.0, gt=0.0, description="An incident without an end report expires after."
    )
    incident_recent_hours: float = Field(
        default=6.0, gt=0.0, description="How long ended incidents are still listed."
    )
    max_incidents: int = Field(default=10_000, ge=1)
    publish: bool = Field(default=True, description="Publish forecasts and alerts to Kafka.")
    live_hours: float = Field(default=6.0, gt=1.0, le=48.0)
    rebuild_hours: float = Field(default=2.0, gt=1.0, le=48.0)
    model_poll_seconds: float = Field(default=2.0, gt=0.0)
    live_group_id: str | None = Field(
        default=None,
        description="Consumer group id under which this replica commits its live positions "
        "(default traffic-api-live-<host>-<port>, one per replica).",
    )
    publisher_group_id: str | None = Field(
        default=None,
        description="Consumer group whose member holding partition 0 of the election topic "
        "publishes forecasts and alerts (default <predictions topic>-publishers: every replica "
        "writing to the same topics competes in the same election).",
    )
    gil_switch_interval_ms: float = Field(
        default=0.5,
        gt=0.0,
        le=100.0,
        description="How long a thread may hold the GIL while another waits (CPython's "
        "default is 5 ms): bounds how long a request waits behind the service's own threads.",
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest request body read (413 beyond); 50,000 readings take about 4.5 MB.",
    )
    history_hours: float = Field(default=24.0, gt=0.0, le=168.0)
    alert_horizon_minutes: int = 30
    alert_margin_mph: float = Field(default=2.0, ge=0.0)
    alert_history: int = 5_000

    def consumer_group(self) -> str:
        return self.live_group_id or f"traffic-api-live-{socket.gethostname()}-{self.port}"

    def publisher_group(self) -> str:
        return self.publisher_group_id or f"{self.predictions_topic}-publishers"

    def publisher_election_topic(self) -> str:
        return f"{self.predictions_topic}-publisher"
