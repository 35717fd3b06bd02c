"""The one place that turns the platform settings into confluent-kafka client configuration.

Every producer, consumer and admin client starts from `kafka_client_config`, so switching the
platform to `TRAFFIC_SECURITY=tls` switches all of them, and no component configures TLS or
credentials its own way.
"""

from __future__ import annotations

from typing import Any

from traffic_core.settings import KafkaPrincipal, SecuritySettings

SCRAM_MECHANISM = "SCRAM-SHA-512"


class MissingCredentials(RuntimeError):
    """TLS is on but this principal's password file (made at set-up) is absent."""


def kafka_client_config(
    bootstrap_servers: str,
    principal: KafkaPrincipal,
    security: SecuritySettings | None = None,
) -> dict[str, Any]:
    """Connection settings for a client acting as `principal`: plaintext, or SASL_SSL with
    the principal's SCRAM password and the stack's CA (broker host names are verified)."""
    security = security or SecuritySettings()
    config: dict[str, Any] = {"bootstrap.servers": bootstrap_servers}
    if not security.tls:
        return config
    password_file = security.kafka_password_file(principal)
    try:
        password = password_file.read_text().strip()
    except FileNotFoundError:
        raise MissingCredentials(
            f"TRAFFIC_SECURITY=tls but {password_file} is missing: run "
            "`python -m infra.stack start kafka` (it creates the users) or point "
            "TRAFFIC_SECURITY_DIR at the stack's security folder"
        ) from None
    return {
        **config,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": SCRAM_MECHANISM,
        "sasl.username": principal,
        "sasl.password": password,
        "ssl.ca.location": str(security.ca_file),
        "ssl.endpoint.identification.algorithm": "https",
    }
