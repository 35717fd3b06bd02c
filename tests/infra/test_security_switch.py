"""TRAFFIC_SECURITY picks the local stack's broker and PostgreSQL: under TLS both keep state of
their own, and Dagster's storage and the API's audit trail connect verified."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.stack.local import LocalStack


def test_the_local_stack_switches_to_its_own_tls_broker_and_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRAFFIC_SECURITY", "tls")
    monkeypatch.setenv("TRAFFIC_SECURITY_DIR", str(tmp_path))
    monkeypatch.delenv("TRAFFIC_PG_STATE_DIR", raising=False)
    stack = LocalStack.from_env(tmp_path / "state")
    assert stack.kafka.security_dir == stack.postgres.security_dir == tmp_path
    assert stack.kafka.state_dir == tmp_path / "state" / "kafka" / "broker-tls"
    assert stack.postgres.state_dir.name == "postgres-tls"
    env = stack.dagster_pg_env()
    assert env["PGSSLMODE"] == "verify-full" and env["DAGSTER_PG_PASSWORD"] != "dagster"
    assert "sslmode=verify-full" in stack.postgres.audit_url
    assert stack.registry.url.startswith("https://") and stack.api.url.startswith("https://")
    assert "--ssl-certfile" in stack.registry.command
    monkeypatch.setenv("TRAFFIC_SECURITY", "plaintext")
    plain = LocalStack.from_env(tmp_path / "state")
    assert plain.kafka.security_dir is None and plain.postgres.security_dir is None
    assert "PGSSLMODE" not in plain.dagster_pg_env()
    assert (
        plain.registry.url.startswith("http://") and "--ssl-certfile" not in plain.registry.command
    )
