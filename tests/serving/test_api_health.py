"""The API's liveness and readiness answers, in-process without a live feed."""

from __future__ import annotations

import shutil
from pathlib import Path

from api_fixtures import JWT_SECRET
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.security import SecuritySettings
from serving.settings import ApiSettings


def client_for(model_dir: Path) -> TestClient:
    return TestClient(
        create_app(
            ApiSettings(model_dir=model_dir, live=False, publish=False),
            SecuritySettings(jwt_secret=JWT_SECRET, audit_enabled=False),
        )
    )


def test_health_and_not_ready_without_a_model(tmp_path: Path) -> None:
    with client_for(tmp_path) as client:
        assert client.get("/v1/health").json()["status"] == "ok"
        response = client.get("/v1/ready")
        assert response.status_code == 503
        assert "no model registered yet" in response.json()["reason"]


def test_not_ready_names_the_model_and_what_is_missing(model_registry: Path) -> None:
    with client_for(model_registry) as client:
        body = client.get("/v1/ready").json()
    assert body["model"] == (model_registry / "latest").read_text().strip()
    assert not body["ready"] and "no live readings yet" in body["reason"]


def test_a_tampered_model_is_not_served(model_registry: Path, tmp_path: Path) -> None:
    """An artifact that no longer matches its manifest's sha256 is refused with the reason."""
    copy = tmp_path / "registry"
    shutil.copytree(model_registry, copy)
    version = (copy / "latest").read_text().strip()
    (copy / "versions" / version / "h15.onnx").write_bytes(b"not a model")
    with client_for(copy) as client:
        body = client.get("/v1/ready").json()
    assert not body["ready"] and "sha256" in body["reason"]
