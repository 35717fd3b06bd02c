"""SCRAM users of the TLS broker: one generated password per principal, in a 0600 file."""

from __future__ import annotations

import secrets
from typing import get_args

from infra.stack.process import private_file, write_private
from traffic_core.kafka.client_config import SCRAM_MECHANISM
from traffic_core.settings import KafkaPrincipal, SecuritySettings

PRINCIPALS: tuple[KafkaPrincipal, ...] = get_args(KafkaPrincipal)
BROKER_USER: KafkaPrincipal = "traffic-broker"


def ensure_passwords(security: SecuritySettings) -> dict[KafkaPrincipal, str]:
    """Each principal's password, generated on first use (never a fixed default)."""
    passwords = {}
    for principal in PRINCIPALS:
        path = security.kafka_password_file(principal)
        if not path.exists() or not path.read_text().strip():
            write_private(path, secrets.token_urlsafe(32))
        private_file(path)  # an older, wider file is narrowed
        passwords[principal] = path.read_text().strip()
    return passwords


def scram_format_args(passwords: dict[KafkaPrincipal, str]) -> list[str]:
    """`kafka-storage format` arguments that create the users with the storage (the passwords
    are URL-safe base64, so they need no quoting in this syntax)."""
    args = []
    for name, password in passwords.items():
        args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
    return args
