"""Dagster resources, configured from environment variables with working local defaults."""

from __future__ import annotations

import os
from typing import Any

from dagster import EnvVar

from resources.kafka import KafkaResource
from resources.lake import LakeResource
from resources.model_store import ModelStoreResource
from resources.network import NetworkResource
from resources.spark import build_spark_resource
from traffic_core.settings import (
    SparkSettings,
    kafka_settings,
    platform_settings,
)

__all__ = [
    "KafkaResource",
    "LakeResource",
    "ModelStoreResource",
    "NetworkResource",
    "build_resources",
]


def from_env(variable: str, default: object) -> Any:
    """A value the environment sets is bound as Dagster's `EnvVar`: the UI shows which variable
    configured a resource, and run configs never store the value itself. Unset, the settings'
    default is bound as a plain value."""
    return EnvVar(variable) if variable in os.environ else str(default)


def build_resources() -> dict[str, Any]:
    """All resources the definitions bind, read from the environment at load time."""
    platform = platform_settings()
    return {
        "kafka": KafkaResource(
            bootstrap_servers=from_env(
                "KAFKA_BOOTSTRAP_SERVERS", kafka_settings().bootstrap_servers
            )
        ),
        "lake": LakeResource(root=from_env("TRAFFIC_LAKE_DIR", platform.lake_dir)),
        "model_store": ModelStoreResource(root=from_env("TRAFFIC_MODEL_DIR", platform.model_dir)),
        "network": NetworkResource(
            dataset=from_env("TRAFFIC_DATASET", platform.dataset),
            data_dir=from_env("TRAFFIC_DATA_DIR", platform.data_dir),
        ),
        "pyspark": build_spark_resource(SparkSettings()),
    }
