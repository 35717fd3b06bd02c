"""API settings from the environment (the same names docker-compose sets)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from traffic_core.settings import PlatformSettings


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAFFIC_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    model_dir: Path = PlatformSettings().model_dir
