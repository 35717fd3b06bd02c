"""Rotating the Kafka users' SCRAM passwords on a running TLS broker, without downtime.

New passwords are written beside the old ones first (0600), set through the Admin API
(`alter_user_scram_credentials`, as the broker's super user), and only then moved over the
password files, so a failure at any step leaves either the old or the new password in the
file and on the broker together. Connections already open stay authenticated; clients pick the
new password up when they restart (the order is in RESTART_ORDER).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable

from confluent_kafka.admin import AdminClient

from infra.stack.kafka import KafkaBroker
from infra.stack.kafka_users import BROKER_USER, PRINCIPALS, set_scram_passwords
from infra.stack.process import ServiceError, write_private
from traffic_core.settings import KafkaPrincipal

RESTART_ORDER = (
    "the stream processor, dagster, the api and any producer or group worker (they read "
    "their password at start; until then their open connections keep working), then kafka "
    "itself if traffic-broker was rotated (its server.properties holds the new one)"
)


def rotate_kafka_passwords(
    broker: KafkaBroker, principals: Iterable[KafkaPrincipal] = PRINCIPALS
) -> list[KafkaPrincipal]:
    """Give each principal a new random password on the broker and in its 0600 file."""
    if broker.security_dir is None:
        raise ServiceError("kafka: password rotation is for the TLS broker (TRAFFIC_SECURITY=tls)")
    security = broker.security
    admin = AdminClient(broker.client_config(BROKER_USER))  # authenticates with the old one
    rotated = list(dict.fromkeys(principals))
    staged = {}
    for principal in rotated:
        current = security.kafka_password_file(principal)
        staged[principal] = current.with_name(current.name + ".new")
        write_private(staged[principal], secrets.token_urlsafe(32))
    set_scram_passwords(admin, {p: staged[p].read_text() for p in rotated})
    for principal, path in staged.items():
        os.replace(path, security.kafka_password_file(principal))
    if BROKER_USER in rotated:
        broker.write_config()
    return rotated
