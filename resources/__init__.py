"""Dagster resources, configured from environment variables with working local defaults."""

from __future__ import annotations

from typing import Any

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


def build_resources() -> dict[str, Any]:
    """All resources the definitions bind, read from the environment at load time."""
    platform = platform_settings()
    return {
        "kafka": KafkaResource(bootstrap_servers=kafka_settings().bootstrap_servers),
        "lake": LakeResource(root=str(platform.lake_dir)),
        "model_store": ModelStoreResource(root=str(platform.model_dir)),
        "network": NetworkResource(dataset=platform.dataset, data_dir=str(platform.data_dir)),
        "pyspark": build_spark_resource(SparkSettings()),
    }
