"""A small API with the real security layer and one guarded route, for the audit trail tests
(in process, or as `uvicorn --factory audit_trail_app:serve` configured by TRAFFIC_API_*)."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from serving.request_logging import configure_logging
from serving.security import Role, SecuritySettings, install_security, require

API_KEY = "audit-trail-key-0123456789"
JWT_SECRET = "audit-trail-secret-" + "x" * 32


def settings_env(audit_url: str, spill_dir: str) -> dict[str, str]:
    """The environment that configures `create()` in a subprocess."""
    return {
        "TRAFFIC_API_JWT_SECRET": JWT_SECRET,
        "TRAFFIC_API_KEYS": f"svc:{API_KEY}",
        "TRAFFIC_API_RATE_LIMIT": "",
        "TRAFFIC_API_AUTH_FAILURE_LIMIT": "",
        "TRAFFIC_API_AUDIT_URL": audit_url,
        "TRAFFIC_API_AUDIT_SPILL_DIR": spill_dir,
    }


def create(settings: SecuritySettings | None = None) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/forecasts/{sensor}", dependencies=[Depends(require(Role.SERVICE))])
    async def forecast(sensor: str) -> dict[str, int]:
        return {"sensor_chars": len(sensor)}  # not echoed: the raw-byte paths are no UTF-8

    install_security(app, settings or SecuritySettings())
    return app


def serve() -> FastAPI:
    """As the API runs: JSON logs at INFO, security settings from the environment."""
    configure_logging("INFO")
    return create()
