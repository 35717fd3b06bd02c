"""Dashboard settings from the environment, so docker-compose and local runs configure it alike."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from traffic_core.settings import PlatformSettings

DEFAULT_API_URL = "http://127.0.0.1:8000"
START_HINT = "Start the platform: `make demo`."


@dataclass(frozen=True)
class DashboardConfig:
    """Where the API and the lake are, which tokens to send, how often live pages refresh."""

    api_url: str = DEFAULT_API_URL
    token: str | None = None
    audit_token: str | None = None
    """Optional auditor/operator token: only the model page's lineage section uses it."""
    tiles: str | None = None
    """Raster tile URL template ({z}/{x}/{y}); None draws no basemap, so maps work offline."""
    lake_dir: Path = Path(".local/lake")
    refresh_seconds: int = 30

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DashboardConfig:
        env = os.environ if env is None else env
        return cls(
            api_url=env.get("TRAFFIC_API_URL", DEFAULT_API_URL).rstrip("/"),
            token=env.get("TRAFFIC_DASHBOARD_TOKEN") or None,
            audit_token=env.get("TRAFFIC_DASHBOARD_AUDIT_TOKEN") or None,
            tiles=env.get("TRAFFIC_DASHBOARD_TILES") or None,
            lake_dir=Path(env["TRAFFIC_LAKE_DIR"])
            if env.get("TRAFFIC_LAKE_DIR")
            else PlatformSettings().lake_dir,
            refresh_seconds=_seconds(env.get("TRAFFIC_DASHBOARD_REFRESH_SECONDS")),
        )


def _seconds(value: str | None, default: int = 30, least: int = 5) -> int:
    """A refresh interval; a typo falls back to the default rather than stopping every page."""
    try:
        return max(least, int(value)) if value else default
    except ValueError:
        return default
