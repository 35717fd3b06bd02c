"""The local stack as configured by environment variables (the same names docker-compose uses)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from infra.stack.certs import CertificateAuthority
from infra.stack.dagster import DagsterUI
from infra.stack.kafka import KafkaBroker
from infra.stack.postgres import PostgresServer
from infra.stack.web import (
    WebService,
    api_service,
    dashboard_service,
    registry_service,
    streams_service,
)
from traffic_core.settings import (
    LOCAL_STATE_DIR,
    KafkaSettings,
    PlatformSettings,
    PostgresSettings,
    SecuritySettings,
)


def kafka_layout_dir(brokers: int, suffix: str = "") -> str:
    """One broker keeps the folder it always had; a cluster of N brokers has one of its own,
    since its nodes are formatted for a quorum of N."""
    return f"broker{suffix}" if brokers == 1 else f"cluster-{brokers}{suffix}"


def running_cluster_size(state_root: Path = LOCAL_STATE_DIR) -> int:
    """The size of a local Kafka cluster with a node running, 0 if none: `stop` and `status`
    then cover the cluster that was started, whatever its size."""
    suffix = "-tls" if SecuritySettings().tls else ""
    for folder in sorted((state_root / "kafka").glob(f"cluster-*{suffix}")):
        size = folder.name.removeprefix("cluster-").removesuffix(suffix)
        if size.isdigit() and any((node / "kafka.pid").exists() for node in folder.glob("node-*")):
            stack = LocalStack.from_env(state_root, brokers=int(size))
            if any(node.process.running() for node in stack.kafka.nodes):
                return int(size)
    return 0


@dataclass(frozen=True)
class LocalStack:
    kafka: KafkaBroker
    postgres: PostgresServer
    registry: WebService
    dagster: DagsterUI
    api: WebService
    dashboard: WebService
    streams: WebService

    @classmethod
    def from_env(
        cls, state_root: Path = LOCAL_STATE_DIR, registry_url: str = "", brokers: int = 0
    ) -> LocalStack:
        """The stack the environment describes; `registry_url` overrides the settings' one,
        `brokers` the Kafka cluster size (KAFKA_BROKERS)."""
        kafka = KafkaSettings()
        brokers = brokers or kafka.brokers
        host, _, port = kafka.bootstrap_servers.split(",")[0].rpartition(":")
        pg = PostgresSettings()
        registry = urlsplit(
            registry_url or PlatformSettings().schema_registry_url or "http://127.0.0.1:8081"
        )
        security = SecuritySettings()
        # Under TLS the broker and the cluster keep state of their own: users, roles and the
        # host rules are made when they are first set up.
        security_dir = security.security_dir if security.tls else None
        suffix = "-tls" if security.tls else ""
        ca = None if security_dir is None else CertificateAuthority(security_dir)
        return cls(
            kafka=KafkaBroker(
                state_dir=state_root / "kafka" / kafka_layout_dir(brokers, suffix),
                security_dir=security_dir,
                libs_dir=state_root / "kafka" / "libs",
                host=host,
                port=int(port),
                controller_port=int(os.environ.get("KAFKA_CONTROLLER_PORT", int(port) + 1)),
                brokers=brokers,
            ),
            postgres=PostgresServer(
                state_dir=Path(
                    os.environ.get("TRAFFIC_PG_STATE_DIR", state_root / f"postgres{suffix}")
                ),
                host=pg.host,
                port=pg.port,
                username=pg.username,
                password=pg.password,
                database=pg.db,
                security_dir=security_dir,
            ),
            registry=registry_service(
                state_root / "registry",
                registry.hostname or "127.0.0.1",
                registry.port or 8081,
                tls=ca,
            ),
            dagster=DagsterUI(
                state_dir=state_root / "dagster",
                host=os.environ.get("DAGSTER_WEBSERVER_HOST", "127.0.0.1"),
                port=int(os.environ.get("DAGSTER_WEBSERVER_PORT", "3000")),
            ),
            api=api_service(
                state_root / "api",
                os.environ.get("TRAFFIC_API_HOST", "127.0.0.1"),
                int(os.environ.get("TRAFFIC_API_PORT", "8000")),
                tls=ca,
            ),
            dashboard=dashboard_service(
                state_root / "dashboard",
                os.environ.get("TRAFFIC_DASHBOARD_HOST", "127.0.0.1"),
                int(os.environ.get("TRAFFIC_DASHBOARD_PORT", "8501")),
                tls=ca,
            ),
            streams=streams_service(
                state_root / "streams",
                os.environ.get("TRAFFIC_STREAM_METRICS_HOST", "127.0.0.1"),
                int(os.environ.get("TRAFFIC_STREAM_METRICS_PORT", "9110")),
            ),
        )

    def dagster_pg_env(self) -> dict[str, str]:
        """Variables that point Dagster's instance storage at this stack's PostgreSQL."""
        pg = self.postgres
        return {
            "DAGSTER_PG_HOST": pg.host,
            "DAGSTER_PG_PORT": str(pg.port),
            "DAGSTER_PG_USERNAME": pg.username,
            "DAGSTER_PG_PASSWORD": pg.password,
            "DAGSTER_PG_DB": pg.database,
            # libpq reads these: under TLS Dagster's storage connects verified, as the API does.
            **(
                {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(pg.tls.ca.ca_cert)}
                if pg.tls is not None
                else {}
            ),
        }
