"""What the API and dashboard need from the local stack: a JWT secret kept in the state folder
(0600, handed to the processes through their environment), tokens, and a seed model so
forecasts are served before the pipeline's first retrain."""

from __future__ import annotations

import secrets
from pathlib import Path

from infra.stack.local import LocalStack
from infra.stack.process import private_file, write_private
from traffic_core.registry import ModelRegistry
from traffic_core.settings import PlatformSettings

REAL_SIX_DAYS = "los_loop_speed_2012-03-01_to_03-06.csv"
SEED_TRAINING_DAYS = ("2012-03-01", "2012-03-05")
"""The seed model's window: real days only (never the average week, see PROVENANCE.md)."""
DASHBOARD_ROLES = ("planner", "auditor")
TOKEN_TTL = 30 * 24 * 3600


def jwt_secret(stack: LocalStack) -> str:
    path = stack.api.state_dir / "jwt-secret"
    if not path.exists() or not path.read_text().strip():
        write_private(path, secrets.token_urlsafe(48))
    private_file(path)  # an older, wider file is narrowed
    return path.read_text().strip()


def token(stack: LocalStack, subject: str, roles: tuple[str, ...]) -> str:
    from serving.security import SecuritySettings, issue_token

    settings = SecuritySettings(jwt_secret=jwt_secret(stack))
    return issue_token(subject, list(roles), settings, ttl=TOKEN_TTL)


def token_file(stack: LocalStack, subject: str, roles: tuple[str, ...]) -> Path:
    """A fresh token in a 0600 file of the API's state folder: printed instructions name the
    file (`export TOKEN=$(cat ...)`), so the token itself never lands in a terminal log."""
    path = stack.api.state_dir / f"{subject}.token"
    write_private(path, token(stack, subject, roles) + "\n")
    return path


def api_env(stack: LocalStack) -> dict[str, str]:
    env = {
        "TRAFFIC_API_JWT_SECRET": jwt_secret(stack),
        "TRAFFIC_API_KAFKA_BOOTSTRAP_SERVERS": stack.kafka.bootstrap_servers,
    }
    if stack.postgres.running():
        env["TRAFFIC_API_AUDIT_URL"] = stack.postgres.audit_url
    return env


def dashboard_env(stack: LocalStack) -> dict[str, str]:
    env = {
        "TRAFFIC_API_URL": stack.api.url,
        "TRAFFIC_DASHBOARD_TOKEN": token(stack, "dashboard", DASHBOARD_ROLES),
    }
    if stack.api.ca_file is not None:
        env["SSL_CERT_FILE"] = str(stack.api.ca_file)  # its HTTP client verifies the API by it
    return env


def seed_model(data_dir: Path | None = None) -> str | None:
    """Publish a ridge model trained on the real 1-5 March when the registry is empty; returns
    its version (None when a model exists already)."""
    settings = PlatformSettings()
    registry = ModelRegistry(settings.model_dir)
    if registry.latest() is not None or settings.dataset != "metr-la":
        return None
    from traffic_core.datasets import load_speed_csv
    from traffic_core.models.quick import train_and_publish
    from traffic_core.networks import load_network_graph

    data = data_dir or settings.data_dir
    speeds = load_speed_csv(data / "metr-la" / REAL_SIX_DAYS)
    first, last = SEED_TRAINING_DAYS
    window = speeds.loc[first : f"{last} 23:55"]
    return train_and_publish(settings.model_dir, window, load_network_graph("metr-la", data))
