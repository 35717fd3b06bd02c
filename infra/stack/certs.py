"""The stack's own certificate authority: one CA and a certificate per service, made locally.

Nothing is downloaded and nothing leaves the state folder: the CA key signs the services'
certificates and is needed again only to rotate them. Every private key is written 0600.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.stack.process import write_private

SERVICE_NAMES: dict[str, tuple[str, ...]] = {
    "kafka-broker": ("kafka", "kafka-1", "kafka-2", "kafka-3"),
    "kafka-controller": ("kafka", "kafka-1", "kafka-2", "kafka-3"),
    "postgres": ("postgres",),
    "api": ("api",),
    "dashboard": ("dashboard",),
    "schema-registry": ("schema-registry",),
}
"""Each service's certificate and the docker-compose host names it answers to (besides
localhost and 127.0.0.1, where the local stack runs)."""

CA_DAYS = 3650
SERVICE_DAYS = 397
"""Service certificates live about a year (what browsers accept); rotate before they lapse."""


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """PKCS#8, unencrypted: what Kafka's PEM keystores, PostgreSQL and uvicorn all read."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _key_usage(**allowed: bool) -> x509.KeyUsage:
    """A KeyUsage allowing only the named uses."""
    uses = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{use: allowed.get(use, False) for use in uses})


@dataclass(frozen=True)
class CertificateAuthority:
    """The CA and service certificates under `root`: `ca.crt`, `ca.key`, `<service>.crt`,
    `<service>.key` and `<service>.pem` (key then certificate, for Kafka's PEM keystores)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    def cert(self, service: str) -> Path:
        return self.root / f"{service}.crt"

    def key(self, service: str) -> Path:
        return self.root / f"{service}.key"

    def keystore(self, service: str) -> Path:
        return self.root / f"{service}.pem"

    def ensure(self) -> list[str]:
        """Create the CA and any missing service certificate; returns what was issued."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        issued = []
        if not (self.ca_cert.exists() and self.ca_key.exists()):
            self._create_ca()
            issued.append("ca")
        for service in SERVICE_NAMES:
            if not self.cert(service).exists() or not self.key(service).exists():
                self.issue(service)
                issued.append(service)
        return issued

    def rotate(self, with_ca: bool = False) -> list[str]:
        """Issue new keys and certificates for every service (and a new CA first if asked:
        then every client must be given the new `ca.crt` too)."""
        if with_ca or not self.ca_cert.exists():
            self._create_ca()
        for service in SERVICE_NAMES:
            self.issue(service)
        return (["ca"] if with_ca else []) + list(SERVICE_NAMES)

    def issue(self, service: str) -> None:
        if service not in SERVICE_NAMES:
            raise ValueError(f"unknown service {service!r}; known: {sorted(SERVICE_NAMES)}")
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.DNSName("localhost"), *map(x509.DNSName, SERVICE_NAMES[service])]
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(service))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=SERVICE_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True, key_agreement=True), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        key_pem = _key_pem(key)
        write_private(self.key(service), key_pem)
        write_private(self.keystore(service), key_pem + cert_pem)
        self.cert(service).write_text(cert_pem)

    def _create_ca(self) -> None:
        key = ec.generate_private_key(ec.SECP384R1())
        now = datetime.now(UTC)
        name = _name("METR traffic platform local CA")
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA384())
        )
        write_private(self.ca_key, _key_pem(key))
        self.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
