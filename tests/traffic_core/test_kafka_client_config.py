"""One switch for every Kafka client: plaintext stays bare, TLS adds SASL_SSL, the principal's
own password and the stack's CA, and a missing password is a clear error, never a default."""

from __future__ import annotations

from pathlib import Path

import pytest

from traffic_core.kafka.client_config import MissingCredentials, kafka_client_config
from traffic_core.settings import SecuritySettings


def test_plaintext_adds_nothing_but_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAFFIC_SECURITY", raising=False)
    assert kafka_client_config("h:1", "traffic-api") == {"bootstrap.servers": "h:1"}


def test_tls_reads_the_principal_password_and_the_ca_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAFFIC_SECURITY", "tls")
    monkeypatch.setenv("TRAFFIC_SECURITY_DIR", str(tmp_path))
    password = SecuritySettings().kafka_password_file("traffic-producer")
    password.parent.mkdir()
    password.write_text("s3cret\n")
    assert kafka_client_config("h:1", "traffic-producer") == {
        "bootstrap.servers": "h:1",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "traffic-producer",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(tmp_path / "ca.crt"),
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_tls_without_the_principal_password_is_refused(tmp_path: Path) -> None:
    security = SecuritySettings(security="tls", security_dir=tmp_path)
    with pytest.raises(MissingCredentials, match=r"traffic-api\.password"):
        kafka_client_config("h:1", "traffic-api", security)


def test_an_unknown_security_mode_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAFFIC_SECURITY", "ssl")
    with pytest.raises(ValueError, match="plaintext"):
        SecuritySettings()
