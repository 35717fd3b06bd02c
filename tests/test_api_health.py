"""The API's liveness and readiness answers."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import ApiSettings


def test_health_and_not_ready_without_a_model(tmp_path: Path) -> None:
    client = TestClient(create_app(ApiSettings(model_dir=tmp_path)))
    assert client.get("/v1/health").json()["status"] == "ok"
    response = client.get("/v1/ready")
    assert response.status_code == 503
    assert "no model registered yet" in response.json()["reason"]


def test_ready_names_the_latest_model(tmp_path: Path) -> None:
    (tmp_path / "latest").write_text("v0001\n")
    client = TestClient(create_app(ApiSettings(model_dir=tmp_path)))
    assert client.get("/v1/ready").json() == {"ready": True, "model": "v0001"}
