"""The stack's local CA: certificates chain to it, name every address a client may use, keep
their keys private, and rotation replaces them (and the CA only when asked)."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from infra.stack.__main__ import main
from infra.stack.certs import SERVICE_NAMES, CertificateAuthority


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    authority = CertificateAuthority(tmp_path_factory.mktemp("security"))
    assert authority.ensure() == ["ca", *SERVICE_NAMES]
    return authority


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
def test_each_service_certificate_chains_to_the_ca_and_names_its_addresses(
    ca: CertificateAuthority, service: str
) -> None:
    cert = _cert(ca.cert(service))
    cert.verify_directly_issued_by(_cert(ca.ca_cert))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", *SERVICE_NAMES[service]}
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Kafka's PEM keystore: the private key, then this certificate.
    keystore = ca.keystore(service).read_text()
    assert keystore.startswith("-----BEGIN PRIVATE KEY-----")
    assert keystore.endswith(ca.cert(service).read_text())


def test_private_keys_are_readable_by_their_owner_only(ca: CertificateAuthority) -> None:
    keys = [ca.ca_key, *map(ca.key, SERVICE_NAMES), *map(ca.keystore, SERVICE_NAMES)]
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in keys} == {p.name: 0o600 for p in keys}


def test_a_new_security_folder_is_its_owner_s_alone(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "security")
    ca.ensure()
    assert stat.S_IMODE(ca.root.stat().st_mode) == 0o700


def test_ensure_keeps_what_exists_and_issues_only_what_is_missing(
    ca: CertificateAuthority,
) -> None:
    before = ca.cert("api").read_bytes()
    ca.cert("dashboard").unlink()
    assert ca.ensure() == ["dashboard"]
    assert ca.cert("api").read_bytes() == before


def test_rotation_replaces_service_certificates_under_the_same_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    ca.ensure()
    old = {s: _cert(ca.cert(s)).serial_number for s in SERVICE_NAMES}
    old_ca = ca.ca_cert.read_bytes()
    ca.rotate()
    assert ca.ca_cert.read_bytes() == old_ca
    for service in SERVICE_NAMES:
        assert _cert(ca.cert(service)).serial_number != old[service]
        _cert(ca.cert(service)).verify_directly_issued_by(_cert(ca.ca_cert))


def test_rotating_the_ca_invalidates_certificates_it_did_not_sign(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    ca.ensure()
    stale = _cert(ca.cert("api"))
    ca.rotate(with_ca=True)
    with pytest.raises(InvalidSignature):
        stale.verify_directly_issued_by(_cert(ca.ca_cert))
    _cert(ca.cert("api")).verify_directly_issued_by(_cert(ca.ca_cert))


def test_certs_command_rotates_the_configured_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRAFFIC_SECURITY_DIR", str(tmp_path))
    assert main(["certs"]) == 0
    first = _cert(CertificateAuthority(tmp_path).cert("postgres")).serial_number
    assert main(["certs", "rotate"]) == 0
    assert _cert(CertificateAuthority(tmp_path).cert("postgres")).serial_number != first
    assert "restart to load them" in capsys.readouterr().out
