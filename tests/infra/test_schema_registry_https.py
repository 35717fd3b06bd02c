"""The schema registry under TRAFFIC_SECURITY=tls: HTTPS only, with the stack CA's certificate;
the platform's registry client verifies it against that CA and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_fixtures import free_port

from infra.stack.certs import CertificateAuthority
from infra.stack.web import WebService, registry_service
from traffic_core.events.registry_client import (
    RegistryHttp,
    SchemaRegistryError,
    register_event_schemas,
)
from traffic_core.settings import PlatformSettings, SecuritySettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(  # `ca`: the stack CA of api_fixtures
    ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebService]:
    service = registry_service(tmp_path_factory.mktemp("registry"), port=free_port(), tls=ca)
    service.start()
    try:
        yield service
    finally:
        service.stop()


def tls(security_dir: Path) -> SecuritySettings:
    return SecuritySettings(security="tls", security_dir=security_dir)


def test_the_stack_registers_the_schemas_over_verified_https(
    registry: WebService, ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAFFIC_SECURITY", "tls")
    monkeypatch.setenv("TRAFFIC_SECURITY_DIR", str(ca.root))
    assert registry.url.startswith("https://")
    ids = register_event_schemas(registry.url)
    assert ids and all(ids.values())


def test_a_client_trusting_another_ca_is_refused(registry: WebService, tmp_path: Path) -> None:
    CertificateAuthority(tmp_path).ensure()
    with pytest.raises(SchemaRegistryError, match="CERTIFICATE_VERIFY_FAILED"):
        RegistryHttp(registry.url, security=tls(tmp_path)).call("GET", "/subjects")


def test_plain_http_gets_no_answer(registry: WebService, ca: CertificateAuthority) -> None:
    assert RegistryHttp(registry.url, security=tls(ca.root)).call("GET", "/subjects") is not None
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{registry.host}:{registry.port}/subjects", timeout=5)


def test_the_default_address_follows_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAFFIC_SCHEMA_REGISTRY_URL", raising=False)
    monkeypatch.setenv("TRAFFIC_SECURITY", "tls")
    assert PlatformSettings().schema_registry_url == "https://127.0.0.1:8081"
    monkeypatch.setenv("TRAFFIC_SECURITY", "plaintext")
    assert PlatformSettings().schema_registry_url == "http://127.0.0.1:8081"
