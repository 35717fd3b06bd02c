"""SCRAM users of the TLS broker: one generated password per principal, in a 0600 file."""

from __future__ import annotations

from typing import get_args

from infra.stack.passwords import ensure_password
from traffic_core.kafka.client_config import SCRAM_MECHANISM
from traffic_core.settings import KafkaPrincipal, SecuritySettings

PRINCIPALS: tuple[KafkaPrincipal, ...] = get_args(KafkaPrincipal)
BROKER_USER: KafkaPrincipal = "traffic-broker"


def ensure_passwords(security: SecuritySettings) -> dict[KafkaPrincipal, str]:
    """Each principal's password, generated on first use (never a fixed default)."""
    return {p: ensure_password(security.kafka_password_file(p)) for p in PRINCIPALS}


def scram_format_args(passwords: dict[KafkaPrincipal, str]) -> list[str]:
    """`kafka-storage format` arguments that create the users with the storage."""
    args = []
    for name, password in passwords.items():
        args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
    return args
