"""SCRAM users of the TLS broker: one generated password per principal, in a 0600 file.

Passwords never appear on a process command line: `kafka-storage format` reads its
`--add-scram` arguments from a 0600 argument file (the java launcher expands `@file` before
`main`, so `/proc/<pid>/cmdline` shows only the file's name), and users added or changed later
go through the Admin API over TLS.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import get_args

from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from infra.stack.passwords import ensure_password
from infra.stack.process import write_private
from traffic_core.kafka.client_config import SCRAM_MECHANISM
from traffic_core.settings import KafkaPrincipal, SecuritySettings

PRINCIPALS: tuple[KafkaPrincipal, ...] = get_args(KafkaPrincipal)
BROKER_USER: KafkaPrincipal = "traffic-broker"
SCRAM_ITERATIONS = 8192
"""Kafka's own default for SCRAM-SHA-512 (at least 4096 is required)."""


def ensure_passwords(security: SecuritySettings) -> dict[KafkaPrincipal, str]:
    """Each principal's password, generated on first use (never a fixed default)."""
    return {p: ensure_password(security.kafka_password_file(p)) for p in PRINCIPALS}


def scram_argument_file(
    path: Path, passwords: Mapping[KafkaPrincipal, str], leading: Sequence[str] = ()
) -> Path:
    """A 0600 java argument file with `leading` arguments, then the `kafka-storage format
    --add-scram` arguments that create the users with the storage; pass it as `@path` and
    delete it after."""
    lines = [f"{argument}\n" for argument in leading] + [
        f"--add-scram\n{SCRAM_MECHANISM}=[name={name},password={password}]\n"
        for name, password in passwords.items()
    ]
    write_private(path, "".join(lines))
    return path


def _upsertion(user: str, password: str) -> UserScramCredentialUpsertion:
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    return UserScramCredentialUpsertion(user, info, password.encode(), secrets.token_bytes(32))


def set_scram_passwords(
    admin: AdminClient, passwords: dict[KafkaPrincipal, str], timeout: float = 30.0
) -> None:
    """Create or replace these users' SCRAM-SHA-512 credentials (takes effect at once for new
    connections; open connections stay authenticated until they reconnect)."""
    if not passwords:
        return
    upserts = [_upsertion(user, password) for user, password in passwords.items()]
    futures = admin.alter_user_scram_credentials(upserts, request_timeout=timeout)
    for future in futures.values():
        future.result()


def add_missing_users(
    admin: AdminClient, passwords: dict[KafkaPrincipal, str], timeout: float = 30.0
) -> list[KafkaPrincipal]:
    """Create the users the broker does not know yet (a principal added after the storage was
    formatted); returns them. Existing users keep their credentials."""
    known = admin.describe_user_scram_credentials(request_timeout=timeout).result()
    missing = {user: password for user, password in passwords.items() if user not in known}
    set_scram_passwords(admin, missing, timeout)
    return list(missing)
