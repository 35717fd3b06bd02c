"""Platform settings from environment variables, with defaults that work on a laptop.

Every process (Dagster code location, producer, API, dashboard) reads the same names, so the
docker-compose topology and the local scripts configure the system identically.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AwareDatetime, BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from upath import UPath

from traffic_core.lake_storage import lake_path

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The checkout this package runs from (the project is installed editable)."""

LOCAL_STATE_DIR = Path(os.environ.get("TRAFFIC_STATE_DIR", REPO_ROOT / ".local"))
"""Ignored folder for everything a local run writes: broker data, lake, models, logs."""


def _web_scheme() -> str:
    """The local services' scheme under the security switch (HTTPS when TRAFFIC_SECURITY=tls)."""
    return "https" if os.environ.get("TRAFFIC_SECURITY") == "tls" else "http"


class PlatformSettings(BaseSettings):
    """Paths and endpoints shared by all components."""

    model_config = SettingsConfigDict(env_prefix="TRAFFIC_", extra="ignore")

    data_dir: Path = Field(default=REPO_ROOT.parent / "shared" / "data")
    lake_dir: Annotated[UPath, BeforeValidator(lake_path)] = Field(
        default=UPath(LOCAL_STATE_DIR / "lake"),
        description="The lake: a local folder (default), file:// URL or hdfs://host:port/path.",
    )
    model_dir: Path = Field(default=LOCAL_STATE_DIR / "models")
    log_dir: Path = Field(default=LOCAL_STATE_DIR / "logs")
    dataset: str = "metr-la"
    schema_registry_url: str = Field(
        default_factory=lambda: f"{_web_scheme()}://127.0.0.1:8081",
        description="Schema registry (Confluent REST API) that assigns the events' wire ids; "
        "empty = no registry: the built-in ids (offline tools and unit tests).",
    )


class KafkaSettings(BaseSettings):
    """Where the broker is and how the topics are laid out."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_partitions: str = Field(
        default="",
        description="Partition count overrides, e.g. 'traffic-events=24,traffic-alerts=4'.",
    )
    brokers: int = Field(
        default=1,
        ge=1,
        description="Brokers in the cluster; topics get three copies, two in sync, from three.",
    )


KafkaPrincipal = Literal[
    "traffic-broker",
    "traffic-admin",
    "traffic-producer",
    "traffic-lake-writer",
    "traffic-api",
    "traffic-stream",
]
"""Who a Kafka client speaks for under TLS: each has its own SCRAM user and ACLs (the broker's
own user is the super user for inter-broker traffic and for setting the ACLs at start)."""


class SecuritySettings(BaseSettings):
    """Security in transit, one switch for every component: `TRAFFIC_SECURITY=tls` makes every
    Kafka client speak SASL_SSL (SCRAM-SHA-512) and verify the broker against the stack's CA."""

    model_config = SettingsConfigDict(env_prefix="TRAFFIC_", extra="ignore")

    security: Literal["plaintext", "tls"] = "plaintext"
    security_dir: Path = Field(
        default=LOCAL_STATE_DIR / "security",
        description="The stack's CA, service certificates and generated passwords (0600).",
    )

    @property
    def tls(self) -> bool:
        return self.security == "tls"

    @property
    def ca_file(self) -> Path:
        return self.security_dir / "ca.crt"

    def kafka_password_file(self, principal: KafkaPrincipal) -> Path:
        return self.security_dir / "kafka-users" / f"{principal}.password"


class IngestionSettings(BaseSettings):
    """Validation rules of both lake writers (the Dagster asset and the group workers)."""

    model_config = SettingsConfigDict(env_prefix="TRAFFIC_INGEST_", extra="ignore")

    event_time_floor: AwareDatetime = Field(
        default=datetime(2012, 3, 1, tzinfo=UTC),
        description="Earliest event time accepted: METR-LA's first day (PEMS-BAY is later).",
    )
    allowed_lateness_hours: float = Field(
        default=168.0,
        description="How far behind its sensor's watermark a reading may be; 0 disables.",
    )
    max_future_skew_seconds: float = Field(
        default=300.0, description="How far ahead of the clock an event time may be."
    )
    unknown_fields: Literal["count", "reject"] = Field(
        default="count",
        description="JSON fields the schema lacks: accept and count, or reject (UNKNOWN_FIELD).",
    )
    max_message_bytes: int = Field(
        default=64 * 1024, description="Larger messages are rejected (OVERSIZED_MESSAGE)."
    )
    dlq_max_record_bytes: int = Field(
        default=512 * 1024,
        description="Rejects larger than this (and than half the DLQ topic's "
        "max.message.bytes) go to the DLQ as reference records.",
    )


class SparkSettings(BaseSettings):
    """Spark master and tuning; local mode unless SPARK_MASTER points at a cluster."""

    model_config = SettingsConfigDict(env_prefix="SPARK_", extra="ignore")

    master: str = "local[2]"
    driver_memory: str = "2g"
    executor_memory: str = Field(
        default="1g", description="Per executor on a cluster; must fit in a worker's memory."
    )
    executor_cores: int = 1
    shuffle_partitions: int = 4
    python: str = Field(
        default=sys.executable,
        validation_alias="PYSPARK_PYTHON",
        description="Interpreter of executors' Python workers: the driver's, so UDFs match.",
    )
    training_min_rows: int = Field(
        default=5_000_000,
        description="From this many training rows on, XGBoost trains on the cluster (every "
        "row) instead of one process (a sample); the six real days have 357,696.",
    )
    training_workers: int = Field(
        default=2, description="Spark tasks an XGBoost training is spread over (one per core)."
    )


class PostgresSettings(BaseSettings):
    """PostgreSQL used for Dagster's instance storage (and later the API audit log)."""

    model_config = SettingsConfigDict(env_prefix="DAGSTER_PG_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 5433
    username: str = "dagster"
    password: str = "dagster"
    db: str = "dagster"

    @property
    def url(self) -> str:
        return f"postgresql://{self.username}:{self.password}@{self.host}:{self.port}/{self.db}"


@lru_cache(maxsize=1)
def platform_settings() -> PlatformSettings:
    return PlatformSettings()


@lru_cache(maxsize=1)
def kafka_settings() -> KafkaSettings:
    return KafkaSettings()


@lru_cache(maxsize=1)
def ingestion_settings() -> IngestionSettings:
    return IngestionSettings()
