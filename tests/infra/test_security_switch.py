"""TRAFFIC_SECURITY picks the local stack's broker: a TLS broker keeps storage of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.stack.local import LocalStack


def test_the_local_stack_switches_to_its_own_tls_broker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRAFFIC_SECURITY", "tls")
    monkeypatch.setenv("TRAFFIC_SECURITY_DIR", str(tmp_path))
    kafka = LocalStack.from_env(tmp_path / "state").kafka
    assert kafka.security_dir == tmp_path
    assert kafka.state_dir == tmp_path / "state" / "kafka" / "broker-tls"
    monkeypatch.setenv("TRAFFIC_SECURITY", "plaintext")
    assert LocalStack.from_env(tmp_path / "state").kafka.security_dir is None
